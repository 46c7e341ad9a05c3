"""The writer: LSN allocation, VCL and VDL, commits, reads, and the cluster.

:class:`Volume` is the database instance's side of the storage layer. It
never writes pages: a :class:`Transaction` (one mini-transaction, MTR)
collects redo records as they are written; at commit it packs each
protection group's records in one C call, the writer allocates the MTR's
LSNs in one contiguous range, stamps each PG's batch in one more, frames it
and sends the frame to the PG's six segments (or holds it for the next
flush while one runs). The commit returns once VDL reaches the MTR's CPL.

Bookkeeping (names from the SIGMOD papers):

- PGCL of a PG: highest LSN held by a write quorum of its segments;
- VCL: highest LSN below which every record of the volume has a write quorum,
  i.e. one below the first unacknowledged record of any PG;
- VDL: highest CPL at or below VCL; reads default to it;
- LAL: no LSN is allocated above VDL + LAL.

Invariants: VCL and VDL never decrease; an MTR's records get consecutive
LSNs, so an MTR is visible entirely (CPL <= VDL) or not at all; a read is
served by one segment whose acknowledged SCL covers the read point.
"""

from __future__ import annotations

import fcntl
import functools
import itertools
import os
import shutil
import uuid
from array import array
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from . import backup as backup_module
from . import log, metafile, native, recovery
from . import messages as m
from .backup_store import KIND_MANIFEST, BackupStore, decode_object, encode_object, open_store
from .clock import Clock, WallClock, to_seconds
from .disk import Disk, RealDisk
from .errors import (
    AuroraStorageError,
    BacktrackDisabledError,
    ConfigurationError,
    CorruptionError,
    InvalidArgumentError,
    LsnLimitError,
    LsnOutOfRangeError,
    MissingNodeError,
    OffsetOutOfRangeError,
    PageOutOfRangeError,
    ReadUnavailableError,
    RecordTooLargeError,
    RecoveryError,
    SegmentRepairNeededError,
    StaleEpochError,
    TimeOutsideWindowError,
    UnknownNodeError,
    VersionGoneError,
    VolumeClosedError,
    VolumeExistsError,
    VolumeInUseError,
    VolumeNotFoundError,
    WriteQuorumError,
)
from .flush import Flusher
from .history import (
    History,
    HistoryVersion,
    flatten_truncations,
    merge_ranges,
    truncation_ranges,
)
from .node import (
    GONE,
    WRITER,
    StorageNode,
    checkpoint_object,
    decode_history,
    encode_history,
    group_syncer,
)
from .protection_group import (
    READ_QUORUM,
    WRITE_QUORUM,
    Outstanding,
    ProtectionGroup,
    QuorumSet,
)
from .recovery import RecoveryPlan
from .segment import Geometry, SharedImages
from .transport import DirectTransport, SimulatedTransport, Transport

KIB = 1024
GIB = 1024**3
TIB = 1024**4
PAGE_SIZE_DEFAULT = 16 * KIB
SEGMENT_SIZE_DEFAULT = 10 * GIB
CAPACITY_MAX = 128 * TIB
LAL_DEFAULT = 10_000_000
COMMIT_TIMEOUT = 10.0  # seconds of transport time a commit waits for its quorum
READ_HEDGE_DELAY = 0.02  # seconds before a read is also asked of the next segment
READ_TIMEOUT = 5.0
AZS = ("az1", "az2", "az3")
NODE_NAMES = tuple(f"{az}-{suffix}" for az in AZS for suffix in ("a", "b"))
DURABILITY_MODES = ("fsync", "os", "memory")
VOLUME_META = "volume.meta"
BACKTRACK_WINDOW_MAX = 72 * 3600.0
LOCK_FILE = "volume.lock"
MTR_RECORDS_MAX = 100_000  # records in one mini-transaction
MTR_BYTES_MAX = 64 * 1024 * 1024  # bytes of records of one PG in one mini-transaction


@dataclass
class VolumeOptions:
    page_size: int = PAGE_SIZE_DEFAULT
    segment_size: int = SEGMENT_SIZE_DEFAULT
    capacity: int = CAPACITY_MAX
    durability: str = "memory"
    lal: int = LAL_DEFAULT
    backend: str | None = None
    commit_timeout: float = COMMIT_TIMEOUT
    backtrack_window: float = 0.0  # seconds; 0 turns backtrack off for good
    backtrack_budget: int = 0  # bytes of change records the window may hold; 0: no limit

    def check(self) -> None:
        if not native._check_page_size(self.page_size):
            raise ConfigurationError(
                f"page_size {self.page_size} must be a power of two from 4 KiB to 64 KiB"
            )
        if self.segment_size < self.page_size or self.segment_size % self.page_size:
            raise ConfigurationError(
                f"segment_size {self.segment_size} must be a positive multiple of "
                f"page_size {self.page_size}"
            )
        if not self.page_size <= self.capacity <= CAPACITY_MAX or self.capacity % self.page_size:
            raise ConfigurationError(
                f"capacity {self.capacity} must be a multiple of page_size up to 128 TiB"
            )
        if self.durability not in DURABILITY_MODES:
            raise ConfigurationError(
                f"durability {self.durability!r} is not available; choose from {DURABILITY_MODES}"
            )
        if self.lal < 1:
            raise ConfigurationError(f"lal {self.lal} must be at least 1")
        if not self.commit_timeout > 0:
            raise ConfigurationError(f"commit_timeout {self.commit_timeout} must be positive")
        if not 0 <= self.backtrack_window <= BACKTRACK_WINDOW_MAX:
            raise ConfigurationError(
                f"backtrack_window {self.backtrack_window} s must be 0 (off) to 72 hours"
            )
        if self.backtrack_budget < 0:
            raise ConfigurationError(f"backtrack_budget {self.backtrack_budget} must be >= 0")

    def geometry(self) -> Geometry:
        return Geometry(
            self.page_size, self.segment_size // self.page_size, self.capacity // self.page_size
        )


_KIND_WRITE_SHAPE = log.KIND_WRITE << 2 * native.SHAPE_BITS
_KIND_PAGE_SHAPE = log.KIND_PAGE << 2 * native.SHAPE_BITS
_KIND_ZERO_SHAPE = log.KIND_ZERO << 2 * native.SHAPE_BITS
_OFFSET_SHIFT = native.SHAPE_BITS
_HEADER_BYTES = log.RECORD_HEADER.size


def _frozen(data: Any) -> bytes:
    """The bytes of a buffer (bytearray, memoryview, array...) as they are now."""
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise InvalidArgumentError(
            f"a record's data is a bytes-like object, not {type(data).__name__}"
        ) from None


class _PgRecords:
    """One PG's records of a transaction, as native.pack takes them at commit."""

    __slots__ = ("meta", "payloads", "size")

    def __init__(self) -> None:
        self.meta = array("Q")  # page number and shape (native.shape) of each record
        self.payloads: list[bytes] = []
        self.size = 0  # bytes the records take packed


class Transaction:
    """One mini-transaction: records collected as written, packed and sent at commit, atomic."""

    __slots__ = (
        "_done",
        "_page_count",
        "_page_size",
        "_pages_per_pg",
        "_pgs",
        "_records",
        "_volume",
        "lsn",
    )

    def __init__(self, volume: Volume) -> None:
        self._volume = volume
        geometry = volume.geometry
        self._page_count = geometry.page_count
        self._page_size = geometry.page_size
        self._pages_per_pg = geometry.pages_per_pg
        self._pgs: dict[int, _PgRecords] = {}
        self._records = 0
        self._done = False
        self.lsn = 0

    def _append(self, page_no: int, shape: int, payload: bytes, length: int) -> None:
        """Adds one record (its LSN and backlink come at commit, in C).

        The caller checked ``page_no``; ``payload`` is immutable, so the record
        holds the bytes as they were written; ``length`` is ``len(payload)``.
        This is the one place a record is added.
        """
        if self._done:
            raise InvalidArgumentError("the transaction has already committed or aborted")
        records = self._records
        if records >= MTR_RECORDS_MAX:
            raise RecordTooLargeError(page_no, records + 1, MTR_RECORDS_MAX)
        pg_id = page_no // self._pages_per_pg
        batch = self._pgs.get(pg_id)
        if batch is None:
            batch = self._pgs[pg_id] = _PgRecords()
        size = batch.size + _HEADER_BYTES + (length + 7 & ~7)  # packed, with this record
        if size > MTR_BYTES_MAX:  # (a frame's body: log.FRAME_BODY_MAX)
            raise RecordTooLargeError(page_no, size, MTR_BYTES_MAX)
        meta = batch.meta
        meta.append(page_no)
        meta.append(shape)
        batch.payloads.append(payload)
        batch.size = size
        self._records = records + 1

    def _check_page(self, page_no: int) -> None:
        if type(page_no) is not int or not 0 <= page_no < self._page_count:
            raise PageOutOfRangeError(page_no, self._page_count)

    def write(self, page_no: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Redo record: ``data`` goes at ``offset`` in the page."""
        # The page check is _check_page's, written out: this runs once per row.
        if type(page_no) is not int or not 0 <= page_no < self._page_count:
            raise PageOutOfRangeError(page_no, self._page_count)
        if type(data) is not bytes:
            data = _frozen(data)  # a copy as of now: the caller may change the buffer
        length = len(data)
        if type(offset) is not int or offset < 0 or not 0 < length <= self._page_size - offset:
            raise OffsetOutOfRangeError(page_no, offset, length, self._page_size)
        self._append(page_no, _KIND_WRITE_SHAPE | offset << _OFFSET_SHIFT | length, data, length)

    def put_page(self, page_no: int, image: bytes | bytearray | memoryview) -> None:
        """Redo record: the whole page becomes ``image`` (exactly one page long)."""
        self._check_page(page_no)
        if type(image) is not bytes:
            image = _frozen(image)
        if len(image) != self._page_size:
            raise RecordTooLargeError(page_no, len(image), self._page_size)
        self._append(page_no, _KIND_PAGE_SHAPE | len(image), image, len(image))

    def zero_page(self, page_no: int) -> None:
        """Redo record: the page becomes zeros."""
        self._check_page(page_no)
        self._append(page_no, _KIND_ZERO_SHAPE, b"", 0)

    def commit(self) -> int:
        if self._done:
            raise InvalidArgumentError("the transaction has already committed or aborted")
        self._done = True
        if self._records:
            batches = {
                pg_id: native.pack(batch.meta, b"".join(batch.payloads), batch.size)
                for pg_id, batch in self._pgs.items()
            }
            self._pgs.clear()
            self.lsn = self._volume._commit(batches, self._records)
        return self.lsn

    def abort(self) -> None:
        self._done = True
        self._pgs.clear()

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


@dataclass
class _PendingRead:
    page_no: int
    image: bytes | None = None
    problems: list[str] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class BacktrackResult:
    """Where a backtrack landed: the last commit at or before the target time."""

    target: float
    lsn: int  # the CPL now last visible (0: the empty volume)
    commit_time: float
    history_version: int


def _make_nodes(
    options: VolumeOptions, root: Path | None, volume_id: str, disks: dict[str, Disk] | None
) -> dict[str, StorageNode]:
    nodes = {}
    mode = "fsync" if options.durability == "fsync" else "os"
    for name in NODE_NAMES:
        disk: Disk | None = None
        if disks is not None:
            disk = disks[name]
        elif root is not None and options.durability != "memory":
            disk = RealDisk(root / "nodes" / name, mode)
        nodes[name] = StorageNode(
            name,
            name.split("-")[0],
            options.geometry(),
            list(NODE_NAMES),
            options.backend,
            disk,
            volume_id,
            options.durability,
        )
    return nodes


def _volume_body(options: VolumeOptions, volume_id: str) -> dict[str, Any]:
    return {
        "volume_id": volume_id,
        "page_size": options.page_size,
        "segment_size": options.segment_size,
        "capacity": options.capacity,
        "durability": options.durability,
        "lal": options.lal,
        "backtrack_window": options.backtrack_window,
        "backtrack_budget": options.backtrack_budget,
        "nodes": list(NODE_NAMES),
    }


def _read_volume_meta(
    root: Path,
) -> tuple[VolumeOptions, str, backup_module.BackupOptions | None, tuple[int, float]]:
    where = str(root / VOLUME_META)
    try:
        data = (root / VOLUME_META).read_bytes()
    except FileNotFoundError:
        raise VolumeNotFoundError(str(root), "no volume.meta") from None
    except OSError as error:
        raise VolumeNotFoundError(str(root), str(error)) from None
    body = metafile.decode(data, metafile.KIND_VOLUME, where)
    try:
        options = VolumeOptions(
            page_size=int(body["page_size"]),
            segment_size=int(body["segment_size"]),
            capacity=int(body["capacity"]),
            durability=str(body["durability"]),
            lal=int(body["lal"]),
            backtrack_window=float(body.get("backtrack_window", 0.0)),
            backtrack_budget=int(body.get("backtrack_budget", 0)),
        )
        volume_id = str(body["volume_id"])
        base = (int(body.get("base_lsn", 0)), float(body.get("base_time", 0.0)))
        stored_backup = None
        if body.get("backup"):
            stored_backup = backup_module.BackupOptions(
                str(body["backup"]),
                float(body["backup_retention_days"]),
                float(body["backup_staging_interval"]),
            )
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptionError(f"{where}: missing or bad field ({error})") from None
    options.check()
    return options, volume_id, stored_backup, base


def _has_reply(replies: dict[int, m.Staged | None], request_id: int) -> bool:
    return replies.get(request_id) is not None


def _answered_by(pending: _PendingRead, node: str) -> bool:
    return pending.image is not None or node in pending.answered


class Cluster:
    """Failure control of the six storage nodes, for tests and demos."""

    def __init__(self, volume: Volume) -> None:
        self._volume = volume

    @property
    def nodes(self) -> dict[str, StorageNode]:
        return self._volume.nodes

    def _names(self, name: str) -> list[str]:
        if name in self.nodes:
            return [name]
        members = [node.name for node in self.nodes.values() if node.az == name]
        if not members:
            raise UnknownNodeError(name, [*self.nodes, *AZS])
        return members

    def is_up(self, name: str) -> bool:
        return name not in self._volume.transport.down

    def fail_node(self, name: str) -> None:
        """The node stops answering; what it stored stays on its disk."""
        for node_name in self._names(name):
            self._volume.transport.set_down(node_name, True)

    def fail_az(self, az: str) -> None:
        if az not in AZS:
            raise UnknownNodeError(az, list(AZS))
        self.fail_node(az)

    def restore_node(self, name: str) -> None:
        """The node answers again and catches up from its peers by gossip."""
        volume = self._volume
        for node_name in self._names(name):
            node = self.nodes[node_name]
            if node.failed:
                node = volume._reload_node(node_name)
                if node.failed:
                    continue  # still unreadable: it stays down, its reason in status()
            volume.transport.set_down(node_name, False)
            for destination, message in node.restart():
                volume.transport.send(node_name, destination, message)
        volume._retransmit()
        volume._settle()

    def restore_az(self, az: str) -> None:
        if az not in AZS:
            raise UnknownNodeError(az, list(AZS))
        self.restore_node(az)

    def partition(self, *groups: list[str] | tuple[str, ...]) -> None:
        """Cuts links between groups of endpoint names ("writer" and node names)."""
        known = {self._volume.writer_name, *self.nodes}
        for group in groups:
            for name in group:
                if name not in known:
                    raise UnknownNodeError(name, sorted(known))
        self._volume.transport.partition(groups)

    def heal(self) -> None:
        volume = self._volume
        volume.transport.heal()
        for node in self.nodes.values():
            if self.is_up(node.name):
                for destination, message in node.restart():
                    volume.transport.send(node.name, destination, message)
        volume._retransmit()
        volume._settle()


class Volume:
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
    ) -> None:
        options.check()
        self.options = options
        self.path = None if path is None else os.fspath(path)
        self.volume_id = volume_id
        self.geometry = options.geometry()
        self.clock: Clock = clock or getattr(transport, "clock", None) or WallClock()
        self._owns_transport = transport is None
        self.transport = transport or DirectTransport()
        self._direct = isinstance(self.transport, DirectTransport)
        self.writer_name = writer_name
        self.epoch = 1
        self.allocated_lsn = 0
        self._vcl = 0
        self._vdl = 0
        self.pgs: dict[int, ProtectionGroup] = {}
        self._cpls: deque[int] = deque()
        # Frames stamped while a flush ran, not yet sent (_commit_locked, _send_held_frames).
        self._held_frames: list[tuple[ProtectionGroup, bytes]] = []
        self._closed = False
        self._request_ids = itertools.count(1)
        self._reads: dict[int, _PendingRead] = {}
        self._rejections: list[m.Rejected] = []
        self.truncations: list[tuple[int, int, int]] = []
        self.history = History.new(self.clock.now())
        self.annulled: tuple[int, ...] = ()  # LSN ranges every read skips (history + truncations)
        self._last_commit_time = 0.0
        # (time, CPL, record bytes) of commits inside the backtrack window, oldest first.
        self._window_commits: deque[tuple[float, int, int]] = deque()
        self._window_bytes = 0
        self._window_floor_lsn = 0  # versions below this may be coalesced
        self._window_floor_time = 0.0  # the earliest time backtrack can still reach
        self._time_answers: dict[int, dict[str, m.TimeAnswer]] = {}
        self._history_acks: set[str] = set()
        self.backup_options = backup_module.BackupOptions()
        self.backup_store: BackupStore | None = None
        self.staging = backup_module.StagingState()
        self._staged: dict[int, m.Staged | None] = {}
        self.restored_from: tuple[float, int] | None = None
        # A restored volume begins at base_lsn (its first CPL, at base_time): nothing
        # below it exists in its segments (recorded in volume.meta; where a backup
        # begins is staging.base).
        self.base_lsn = 0
        self.base_time = 0.0
        self._pinned: list[int] = []
        self.read_latency: dict[str, float] = {}
        self.recovery: RecoveryPlan | None = None
        self._recovery_states: dict[str, m.RecoveryState] = {}
        self._truncated: set[str] = set()
        self._lock_handle: Any = None
        if nodes is None:
            nodes = {
                name: StorageNode(
                    name, name.split("-")[0], self.geometry, list(NODE_NAMES), options.backend
                )
                for name in NODE_NAMES
            }
        self.nodes = nodes
        self.quorum = QuorumSet((NODE_NAMES,))
        devices = {
            node.disk.device() if isinstance(node.disk, RealDisk) else None
            for node in self.nodes.values()
        }
        # Nodes on one file system share its flush (GroupSyncJob); otherwise each
        # node syncs its own files.
        self._group_sync = (
            options.durability == "fsync" and len(devices) == 1 and None not in devices
        )
        for node in self.nodes.values():
            self._register_node(node)
        self._flusher: Flusher | None = None
        if self._group_sync:
            disk = next(iter(self.nodes.values())).disk
            assert isinstance(disk, RealDisk) and disk.flush_method is not None
            self._flusher = Flusher(disk.flush_method, options.backend)
            for node in self.nodes.values():
                assert isinstance(node.disk, RealDisk)
                node.disk.on_write = self._flusher.kick  # write-back starts at once
            self.transport.register_syncer(
                "disks", group_syncer(lambda: list(self.nodes.values()), self._flusher)
            )
        self.transport.register(self.writer_name, self._handle)
        self.transport.before_lead = self._send_held_frames
        if isinstance(self.transport, SimulatedTransport):
            self.transport.tick_targets = [*NODE_NAMES, self.writer_name]
        self.cluster = Cluster(self)

    def _register_node(self, node: StorageNode) -> None:
        node.on_stop = lambda: self.transport.set_down(node.name, True)
        # Only fsync durability has sync work for the transport to run.
        per_node = node.durability == "fsync" and node.disk is not None and not self._group_sync
        self.transport.register(node.name, node.handle, node.begin_sync if per_node else None)

    def _reload_node(self, name: str) -> StorageNode:
        """Replaces a failed node by a fresh one that reloads and re-verifies its disk."""
        old = self.nodes[name]
        node = StorageNode(
            name,
            old.az,
            self.geometry,
            list(NODE_NAMES),
            self.options.backend,
            old.disk,
            self.volume_id,
            self.options.durability,
        )
        if node.disk is not None:
            try:
                node.load()
            except (CorruptionError, OSError) as error:
                node.failed = f"cannot load: {error}"
        self.nodes[name] = node
        self._register_node(node)
        return node

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
        commit_timeout: float = COMMIT_TIMEOUT,
        disks: dict[str, Disk] | None = None,
        backtrack_window: float = 0.0,
        backtrack_budget: int = 0,
        backup: Any = None,
        backup_retention_days: float = 1.0,
        backup_staging_interval: float = backup_module.STAGING_INTERVAL_DEFAULT,
    ) -> Volume:
        """A new empty volume of six nodes in three AZs.

        With a ``path``, nodes keep their segments in ``path/nodes/<name>`` and
        ``durability`` defaults to ``"fsync"``; without one, to ``"memory"``.
        ``disks`` replaces the node folders by given disks (crash tests).
        ``backup`` (a folder, a URL, or a BackupStore) turns on continuous
        backup, kept ``backup_retention_days`` (1 to 35), staged every
        ``backup_staging_interval`` seconds.
        """
        backup_options = backup_module.BackupOptions(
            backup, float(backup_retention_days), float(backup_staging_interval)
        )
        backup_options.check()
        if durability is None:
            durability = "memory" if path is None and disks is None else "fsync"
        options = VolumeOptions(
            page_size,
            segment_size,
            capacity,
            durability,
            lal,
            backend,
            commit_timeout,
            float(backtrack_window),
            int(backtrack_budget),
        )
        options.check()
        if durability != "memory" and path is None and disks is None:
            raise ConfigurationError(f"durability {durability!r} needs a path")
        volume_id = uuid.uuid4().hex
        root = None if path is None else Path(path)
        if root is not None:
            if root.exists() and (not root.is_dir() or any(root.iterdir())):
                raise VolumeExistsError(str(root))
            root.mkdir(parents=True, exist_ok=True)
        nodes = _make_nodes(options, root, volume_id, disks)
        clock = clock or getattr(transport, "clock", None) or WallClock()
        history = History.new(clock.now())
        for node in nodes.values():
            node.history = history
            node.write_meta()
        if root is not None:
            RealDisk(root, "fsync" if durability == "fsync" else "os").replace(
                VOLUME_META, metafile.encode(metafile.KIND_VOLUME, _volume_body(options, volume_id))
            )
        volume = cls(options, path, clock, transport, nodes=nodes, volume_id=volume_id)
        volume.history = history
        volume._take_lock()
        if backup is not None:
            volume._attach_backup(backup_options)
        return volume

    def _attach_backup(self, options: backup_module.BackupOptions) -> None:
        store = open_store(options.target)
        self.backup_options = options
        self.backup_store = store
        for node in self.nodes.values():
            node.backup = store
        if not store.exists(backup_module.HISTORY_NAME) and self._vdl:
            # A new backup of a volume with history: its segments may have folded and
            # trimmed old frames, so it begins with page images at today's VDL.
            now = self.clock.now()
            self.staging.base = (self._vdl, now)
            self.staging.earliest = max(self.staging.earliest, now)
        if store.exists(backup_module.HISTORY_NAME):
            catalog = backup_module.BackupCatalog(store)
            if catalog.meta.get("volume_id") not in (None, self.volume_id):
                raise ConfigurationError(
                    f"the backup store holds volume {catalog.meta.get('volume_id')}, "
                    f"not {self.volume_id}"
                )
            if catalog.rounds:
                self.staging.last_round_vdl = max(entry.vdl for entry in catalog.rounds)
                self.staging.rounds = sorted((entry.vdl, entry.time) for entry in catalog.rounds)
                staged_cpls = [
                    (cpl, time)
                    for entry in catalog.rounds
                    for cpl, time in zip(entry.cpls, entry.times, strict=True)
                ]
                if staged_cpls:
                    self.staging.last_cpl = max(staged_cpls)
                self.staging.last_round_time_recorded = max(entry.time for entry in catalog.rounds)
                # After a reopen every PG continues from the last recorded round.
                for pg_id in self.pgs:
                    self.staging.staged_lsn[pg_id] = self.staging.last_round_vdl
        if isinstance(options.target, (str, os.PathLike)):
            self._write_volume_meta()

    def _write_volume_meta(self) -> None:
        """Replaces volume.meta: options, the backup when given by path, the base LSN."""
        if self.path is None:
            return
        body = _volume_body(self.options, self.volume_id)
        target = self.backup_options.target
        if isinstance(target, (str, os.PathLike)):
            body["backup"] = os.fspath(target)
            body["backup_retention_days"] = self.backup_options.retention_days
            body["backup_staging_interval"] = self.backup_options.staging_interval
        if self.base_lsn:
            body["base_lsn"] = self.base_lsn
            body["base_time"] = self.base_time
        RealDisk(Path(self.path), "fsync" if self.options.durability == "fsync" else "os").replace(
            VOLUME_META, metafile.encode(metafile.KIND_VOLUME, body)
        )

    def _start_from_images(self, lsn: int, pages: dict[int, list[SharedImages]]) -> None:
        """Starts this new, empty volume at ``lsn`` holding ``pages`` (a restore).

        Instead of replaying the pages through the write path, every segment of
        each PG starts at ``lsn`` from the images, shared by the six replicas
        (Segment.start_at), and nodes with a disk each keep their own copy
        (StorageNode.persist_start). The writer resumes as if VDL had just
        reached ``lsn``, a commit at the volume's creation time: the next
        commit's LSNs follow it, reads at older LSNs find no version, and
        backtrack and continuous backup begin there.
        """
        with self.transport.lock:
            if self.allocated_lsn or self.pgs or lsn <= 0:
                raise InvalidArgumentError(
                    f"only a new, empty volume can start from page images, at an LSN > 0 ({lsn})"
                )
            time = self.history.created_at
            for node in self.nodes.values():
                for pg_id, layers in sorted(pages.items()):
                    node.start_segment(pg_id, lsn, time, layers)
            checkpoints: dict[int, bytes] = {}
            if any(node.disk is not None for node in self.nodes.values()):
                # Every node writes the same file: encode it once.
                first = next(iter(self.nodes.values()))
                checkpoints = {
                    pg_id: checkpoint_object(first.segments[pg_id], lsn, lsn, (), self.volume_id)
                    for pg_id in pages
                }
            for node in self.nodes.values():
                node.persist_start(lsn, checkpoints)
            for pg_id in pages:
                pg = self.pgs[pg_id] = ProtectionGroup(pg_id, self.quorum, tail_lsn=lsn, pgcl=lsn)
                pg.scls = dict.fromkeys(self.quorum.members, lsn)
            self.allocated_lsn = self._vcl = self._vdl = lsn
            self._window_floor_lsn = lsn
            self._last_commit_time = max(self._last_commit_time, time)
            self.base_lsn, self.base_time = lsn, time
            self.staging.base = (lsn, time)  # a backup begins with these pages
            self._write_volume_meta()

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
        leave_logs: bool = False,
    ) -> Volume:
        """Opens a volume and recovers it: everything committed is there, nothing else.

        A node whose files are damaged is set aside, whole (an unreadable
        node.meta) or per segment (StorageNode.load); the volume opens while a
        read quorum of every PG can vouch for its data. ``leave_logs`` (verify)
        leaves every log and checkpoint as it is: tails are reported, not cut,
        and frames fetched from peers are not written; node.meta still takes
        the recovery's epoch and truncation.

        Raises :class:`VolumeNotFoundError` for a folder that is not a volume,
        :class:`FormatVersionError` for a newer format, :class:`MissingNodeError`
        when node folders are gone (unless ``rebuild_missing``),
        :class:`SegmentRepairNeededError` when a missing node cannot be rebuilt
        (its peers no longer hold the frames it lacks), and
        :class:`RecoveryError`, naming each node it could not use and why, when
        too few nodes can vouch for their data.
        """
        root = None if path is None else Path(path)
        backup_options = backup_module.BackupOptions(backup)
        base = (0, 0.0)
        if root is not None:
            options, volume_id, stored_backup, base = _read_volume_meta(root)
            if backup is None and stored_backup is not None:
                backup_options = stored_backup
        if options is None:
            raise ConfigurationError("Volume.open needs a path, or options with disks")
        if backend is not None:
            options.backend = backend
        missing: list[str] = []
        if root is not None and disks is None:
            missing = [name for name in NODE_NAMES if not (root / "nodes" / name).exists()]
            if missing and not rebuild_missing:
                raise MissingNodeError(str(root), missing)
        nodes = _make_nodes(options, root, volume_id, disks)
        volume = cls(options, path, clock, transport, nodes=nodes, volume_id=volume_id)
        volume.base_lsn, volume.base_time = base
        volume._take_lock()
        try:
            for node in nodes.values():
                try:
                    node.load(leave_logs)
                except (CorruptionError, OSError) as error:
                    # A node that cannot load is down; the others may still form quorums.
                    node.failed = f"cannot load: {error}"
                    volume.transport.set_down(node.name, True)
            volume._recover()
            volume._check_rebuilt(missing)
            if backup_options.target is not None:
                volume._attach_backup(backup_options)
        except BaseException:
            volume._release_lock()
            raise
        return volume

    def _check_rebuilt(self, rebuilt: list[str]) -> None:
        """Raises SegmentRepairNeededError if a rebuilt node could not catch up by gossip;
        its new folder goes again, so the node is still missing afterwards."""
        if not rebuilt:
            return
        self._settle()
        for name in rebuilt:
            node = self.nodes[name]
            lacking = [s for _, s in sorted(node.segments.items()) if s.needs_repair or s.failed]
            if not lacking:
                continue
            detail = f"PG {lacking[0].pg_id}: {lacking[0].needs_repair or lacking[0].failed}"
            if len(lacking) > 1:
                detail += f" (and {len(lacking) - 1} more PGs)"
            self.close()
            for missing in rebuilt:
                disk = self.nodes[missing].disk
                if isinstance(disk, RealDisk):
                    shutil.rmtree(disk.root, ignore_errors=True)
            raise SegmentRepairNeededError(name, detail)

    def _take_lock(self) -> None:
        if self.path is None:
            return
        handle = open(Path(self.path) / LOCK_FILE, "a+b")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise VolumeInUseError(self.path) from None
        self._lock_handle = handle

    def _release_lock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    # --- recovery -----------------------------------------------------------------------

    def _recover(self) -> RecoveryPlan:
        """Crash recovery of the writer (recovery.py): fence, learn SCLs, truncate, resume."""
        with self.transport.lock:
            live = [name for name, node in self.nodes.items() if not node.failed]
            epoch = max(node.epoch for node in self.nodes.values()) + 1
            self.epoch = epoch
            self._recovery_states.clear()
            self._truncated.clear()
            for name in live:
                self.transport.send(self.writer_name, name, m.RecoveryQuery(epoch))
            self.transport.run_until(
                lambda: len(self._recovery_states) == len(live), self.options.commit_timeout
            )
            self._raise_if_fenced()
            states = list(self._recovery_states.values())
            unavailable = {
                name: node.failed or "no answer to the recovery query"
                for name, node in self.nodes.items()
                if name not in self._recovery_states
            }
            if len(states) < READ_QUORUM:
                raise RecoveryError(
                    f"{len(states)} of 6 nodes answered the recovery query; {READ_QUORUM} "
                    "needed; unusable: "
                    + "; ".join(f"{name}: {why}" for name, why in sorted(unavailable.items()))
                )
            plan = recovery.plan(epoch, states, self.options.lal, unavailable)
            lo, hi = plan.truncation
            self.pgs = {pg_id: ProtectionGroup(pg_id, self.quorum) for pg_id in plan.pg_ids}
            for name in live:
                self.transport.send(self.writer_name, name, m.Truncate(epoch, lo, hi))
            answered = self.transport.run_until(
                lambda: len(self._truncated) >= len(live), self.options.commit_timeout
            )
            if not answered and len(self._truncated) < WRITE_QUORUM:
                raise RecoveryError(
                    f"the truncation reached {len(self._truncated)} nodes; {WRITE_QUORUM} needed"
                )
            # Segments report their rewound SCLs once synced: each PG's tail is the
            # highest, since a responder holds the PG's whole chain up to VDL.
            self.transport.wait_for_syncs()
            self.truncations = list(plan.truncations)
            histories = [decode_history(state.history) for state in states if state.history]
            usable = [history for history in histories if history is not None]
            if usable:
                merged = usable[0]
                for history in usable[1:]:
                    merged = merged.merged_with(history)
                self.history = merged
            self._refresh_annulled()
            self.allocated_lsn = hi
            self._vcl = self._vdl = lo
            for pg in self.pgs.values():
                pg.tail_lsn = max(pg.scls.values(), default=0)
                pg.durable_target = pg.tail_lsn
            self.recovery = plan
            self._advance()
            self._window_floor_time = max(
                self.history.created_at, self.clock.now() - self.options.backtrack_window
            )
            if self.options.backtrack_window:
                self._window_floor_lsn, _ = self._last_commit_at(self._window_floor_time)
            else:
                self._window_floor_lsn = self._vdl
            self._last_commit_time = max(self._last_commit_time, self.clock.now())
            return plan

    def _refresh_annulled(self) -> None:
        self.annulled = merge_ranges(
            self.history.current.annulled, truncation_ranges(self.truncations)
        )

    # --- bookkeeping ----------------------------------------------------------------

    @property
    def vcl(self) -> int:
        return self._vcl

    @property
    def vdl(self) -> int:
        return self._vdl

    def _advance(self) -> None:
        """Recomputes VCL from the PGs and VDL from the CPLs in flight."""
        firsts = [
            first for pg in self.pgs.values() if (first := pg.first_unacknowledged()) is not None
        ]
        vcl = min(firsts) - 1 if firsts else self.allocated_lsn
        if vcl > self._vcl:
            self._vcl = vcl
        cpls = self._cpls
        while cpls and cpls[0] <= self._vcl:
            self._vdl = cpls.popleft()

    def _handle(self, message: m.Message, sender: str) -> list[tuple[str, m.Message]]:
        if isinstance(message, m.SegmentState):
            pg = self.pgs.get(message.pg_id)
            if (
                pg is not None
                and message.epoch == self.epoch
                and pg.record_scl(message.node, message.scl)
            ):
                self._advance()
        elif isinstance(message, m.PageImage):
            pending = self._reads.get(message.request_id)
            if pending is not None:
                pending.answered.add(message.node)
                if message.problem:
                    pending.problems.append(f"{message.node}: {message.problem}")
                elif pending.image is None:
                    pending.image = message.image
        elif isinstance(message, m.Rejected):
            self._rejections.append(message)
        elif isinstance(message, m.RecoveryState):
            if message.epoch == self.epoch:
                self._recovery_states[message.node] = message
        elif isinstance(message, m.Truncated):
            if message.epoch == self.epoch:
                self._truncated.add(message.node)
        elif isinstance(message, m.TimeAnswer):
            answers = self._time_answers.get(message.request_id)
            if answers is not None:
                answers[message.node] = message
        elif isinstance(message, m.Staged):
            if message.request_id in self._staged:
                self._staged[message.request_id] = message
        elif isinstance(message, m.HistorySet):
            if message.epoch == self.epoch and message.version == self.history.current.version:
                self._history_acks.add(message.node)
        elif isinstance(message, m.Tick):
            return self._retransmissions()
        return []

    def _check_open(self) -> None:
        if self._closed:
            raise VolumeClosedError("the volume is closed")

    def _raise_if_fenced(self) -> None:
        if self._rejections:
            rejected = self._rejections[-1]
            raise StaleEpochError(rejected.node, rejected.epoch, rejected.reason)

    # --- writes -----------------------------------------------------------------------

    def transaction(self) -> Transaction:
        self._check_open()
        return Transaction(self)

    def _commit(self, batches: dict[int, bytearray], record_count: int) -> int:
        # The transport's lock serializes LSN allocation and every change of
        # protocol state; waiting for acks releases it, so other threads' frames
        # join the same fsyncs (group commit).
        with self.transport.lock:
            return self._commit_locked(batches, record_count)

    def _commit_locked(self, batches: dict[int, bytearray], record_count: int) -> int:
        self._check_open()
        self._raise_if_fenced()
        wanted = self.allocated_lsn + record_count
        limit = self.options.lal
        if wanted > self._lal_base() + limit and not self.transport.run_until(
            lambda: wanted <= self._lal_base() + limit, self.options.commit_timeout
        ):
            raise LsnLimitError(wanted, self._vdl, limit)
        if self._flusher is not None:
            self._flusher.prime()  # its thread wakes while the nodes take the frames
        time = max(self.clock.now(), self._last_commit_time)
        page_size = self.geometry.page_size
        lsn = self.allocated_lsn + 1
        last_pg = max(batches)
        # Every frame is built before any state changes: a failure leaves none.
        built = []
        for pg_id in sorted(batches):
            body = batches[pg_id]
            pg = self.pgs.get(pg_id)
            backlink = pg.tail_lsn if pg is not None else 0
            last = native.stamp(body, page_size, lsn, backlink, pg_id == last_pg, time)
            frame = log.encode_frame(pg_id, self.epoch, backlink, lsn, last, last - lsn + 1, body)
            built.append((pg_id, lsn, last, frame))
            lsn = last + 1
        sends = []
        for pg_id, first, last, frame in built:
            pg = self.pgs.get(pg_id)
            if pg is None:
                pg = self.pgs[pg_id] = ProtectionGroup(pg_id, self.quorum)
            pg.tail_lsn = last
            pg.outstanding.append(Outstanding(first, last, frame))
            sends.append((pg, frame))
        cpl = lsn - 1
        self._last_commit_time = time
        self.allocated_lsn = cpl
        self._cpls.append(cpl)
        if self.options.backtrack_window:
            self._note_commit(time, cpl, sum(len(body) for body in batches.values()))
        # While a flush runs these frames would wait for the next one anyway: held
        # back, they reach each segment in one message with those of every commit
        # that arrives meanwhile, sent by the thread that leads that flush. Frames
        # still held otherwise (their commit timed out) go first, in LSN order.
        self._held_frames += sends
        if not self.transport.flush_in_flight() or not self._leads_send_held_frames():
            self._send_held_frames()
        if not self.transport.run_until(lambda: self._vdl >= cpl, self.options.commit_timeout):
            self._raise_if_fenced()
            raise WriteQuorumError(cpl, self._vdl, self._quorum_detail(sends))
        if self.backup_store is not None and (
            time - self.staging.last_round_time >= self.backup_options.staging_interval
        ):
            self._stage_quietly()  # the commit is durable: a backup failure must not hide that
        return cpl

    def _send_frames(self, sends: list[tuple[ProtectionGroup, bytes]]) -> None:
        """Sends frames (in LSN order) to their PGs' segments, one message per PG."""
        retain = self.min_read_point()
        truncations = flatten_truncations(self.truncations)
        by_pg: dict[int, tuple[ProtectionGroup, list[bytes]]] = {}
        for pg, frame in sends:
            by_pg.setdefault(pg.pg_id, (pg, []))[1].append(frame)
        for pg, frames in by_pg.values():
            pg_retain = retain
            if self.backup_store is not None:  # the backup's page images are taken at staged LSNs
                pg_retain = min(retain, self.staging.staged_lsn.get(pg.pg_id, 0))
            message = m.WriteFrames(
                self.epoch, pg.pg_id, tuple(frames), pg_retain, self._gc_floor(pg), truncations
            )
            for node in pg.quorum.members:
                self.transport.send(self.writer_name, node, message)

    def _send_held_frames(self) -> None:
        """Sends the frames held back while a flush ran (the transport's before_lead)."""
        if self._held_frames:
            self._send_frames(self._held_frames)
            self._held_frames = []

    def _leads_send_held_frames(self) -> bool:
        """True if flush leaders send this volume's held frames (a transport shared
        with a later volume calls that volume's instead: hold nothing then)."""
        return self.transport.before_lead == self._send_held_frames

    def _gc_floor(self, pg: ProtectionGroup) -> int:
        """Frames at or below this may leave the PG's segments' gossip chains.

        Every segment holds them, they are at or below VDL (recovery may rewind
        chains to VDL), and the backup has staged them.
        """
        floor = min(pg.floor(), self._vdl)
        if self.backup_store is not None:
            floor = min(floor, self.staging.staged_lsn.get(pg.pg_id, 0))
        return floor

    # --- continuous backup (backup_module.py) --------------------------------------------------

    def _stage_quietly(self) -> None:
        """A staging round whose failure is recorded (status()) rather than raised."""
        try:
            self.stage_backup()
        except (AuroraStorageError, OSError) as error:
            self.staging.last_error = f"{type(error).__name__}: {error}"

    def stage_backup(self) -> bool:
        """One staging round: every PG's frames up to VDL go to the backup store.

        Returns True when every PG was staged and the round was recorded; a PG
        no healthy segment can stage leaves the round for the next attempt.
        """
        store = self.backup_store
        if store is None:
            return False
        with self.transport.lock:
            now = self.clock.now()
            self.staging.last_round_time = now
            upto = self._vdl
            history_changed = self.staging.history_written != self._history_signature()
            if (
                upto <= self.staging.last_round_vdl
                and not history_changed
                and (
                    now - self.staging.last_round_time_recorded
                    < self.backup_options.staging_interval
                )
            ):
                return True
            unnamed = self.staging.unnamed_cpls
            base_lsn, base_time = self.staging.base
            if base_lsn:
                # A restored volume holds no frame below its base, nor may a volume
                # given a new backup: each PG's backup begins with its pages there,
                # and a round names the base commit.
                due = {
                    pg_id: (0, base_lsn)
                    for pg_id in self.pgs
                    if self.staging.staged_lsn.get(pg_id, 0) < base_lsn
                }
                for pg_id, reply in self._stage_requests(due, snapshot=True).items():
                    if reply is None or reply.problem:
                        return self._staging_failed(pg_id, reply)
                    self.staging.staged_lsn[pg_id] = base_lsn
                    self.staging.bytes_since_snapshot[pg_id] = 0
                base = (base_lsn, base_time)
                if self.staging.last_cpl[0] < base_lsn and base not in unnamed:
                    unnamed.append(base)
            requests: dict[int, tuple[int, int]] = {}
            for pg in self.pgs.values():
                staged = self.staging.staged_lsn.get(pg.pg_id, 0)
                if min(pg.tail_lsn, upto) <= staged:
                    self.staging.staged_lsn[pg.pg_id] = upto
                    continue
                requests[pg.pg_id] = (staged, upto)
            replies = self._stage_requests(requests, snapshot=False)
            failed: tuple[int, m.Staged | None] | None = None
            for pg_id, reply in replies.items():
                if reply is None or reply.problem:
                    failed = failed or (pg_id, reply)
                    continue
                self.staging.staged_lsn[pg_id] = upto
                self.staging.bytes_since_snapshot[pg_id] = (
                    self.staging.bytes_since_snapshot.get(pg_id, 0) + reply.size
                )
                unnamed += zip(reply.cpls, reply.times, strict=True)
            if failed is not None:
                return self._staging_failed(*failed)
            if self.staging.history_written != self._history_signature():
                store.put(backup_module.HISTORY_NAME, backup_module.history_object(self))
                self.staging.history_written = self._history_signature()
            cpls = sorted(set(unnamed))
            if not cpls and self.staging.last_cpl[0]:
                # Every round names the last CPL so far, so the newest round at or
                # before a time always holds the restore point of that time.
                cpls = [self.staging.last_cpl]
            in_flight = self.allocated_lsn > self._lal_base()
            round_time = cpls[-1][1] if in_flight and cpls else now
            round_meta: dict[str, Any] = {
                "vdl": upto,
                "time": max(round_time, self.staging.last_round_time_recorded),
                "cpls": [cpl for cpl, _ in cpls],
                "times": [time for _, time in cpls],
            }
            name = backup_module.round_name(upto, round_meta["time"])
            if store.exists(name):  # a second round in the same millisecond: keep both lists
                earlier, _ = decode_object(store.get(name), name, KIND_MANIFEST)
                merged = sorted({*zip(earlier["cpls"], earlier["times"], strict=True), *cpls})
                round_meta["cpls"] = [cpl for cpl, _ in merged]
                round_meta["times"] = [time for _, time in merged]
            store.put(name, encode_object(KIND_MANIFEST, b"", round_meta))
            # Named by a recorded round now; had the upload failed, the next round would.
            unnamed.clear()
            self.staging.last_error = ""
            if cpls:
                self.staging.last_cpl = cpls[-1]
            self.staging.last_round_vdl = upto
            self.staging.last_round_time_recorded = round_meta["time"]
            self.staging.rounds.append((upto, round_meta["time"]))
            self._take_snapshots(now)
            if self._expire_backups(now):
                store.put(backup_module.HISTORY_NAME, backup_module.history_object(self))
                self.staging.history_written = self._history_signature()
            return True

    def _staging_failed(self, pg_id: int, reply: m.Staged | None) -> bool:
        why = reply.problem if reply is not None else "no healthy segment answered"
        self.staging.last_error = f"PG {pg_id}: {why}"
        return False

    def _history_signature(self) -> int:
        return hash((self.history.current.version, tuple(self.truncations), self.staging.earliest))

    def _stage_requests(
        self, requests: dict[int, tuple[int, int]], snapshot: bool
    ) -> dict[int, m.Staged | None]:
        """Sends each PG's Stage to one healthy segment that holds it; retries on another."""
        replies: dict[int, m.Staged | None] = {}
        for pg_id, (staged, upto) in requests.items():
            pg = self.pgs[pg_id]
            needed = min(pg.tail_lsn, upto)
            start = pg_id % len(NODE_NAMES)
            order = NODE_NAMES[start:] + NODE_NAMES[:start]
            replies[pg_id] = None
            for name in order:
                if pg.scls.get(name, 0) < needed or not self.cluster.is_up(name):
                    continue
                request_id = next(self._request_ids)
                self._staged[request_id] = None
                self.transport.send(
                    self.writer_name,
                    name,
                    m.Stage(request_id, pg_id, staged, upto, needed, int(snapshot), self.annulled),
                )
                self.transport.run_until(
                    functools.partial(_has_reply, self._staged, request_id),
                    self.options.commit_timeout,
                )
                reply = self._staged.pop(request_id)
                replies[pg_id] = reply
                if reply is not None and not reply.problem:
                    break
        return replies

    def _take_snapshots(self, now: float) -> None:
        """PAGES objects for PGs with enough log staged since their last one."""
        horizon = now - max(
            self.options.backtrack_window, self.backup_options.retention_days * backup_module.DAY
        )
        unsettled = [
            version.annulled[i]
            for version in self.history.versions
            if version.created_at >= horizon
            for i in range(0, len(version.annulled), 2)
        ]
        limit = min(unsettled, default=self._vdl)
        requests = {
            pg_id: (0, self.staging.staged_lsn[pg_id])
            for pg_id, size in self.staging.bytes_since_snapshot.items()
            if size >= backup_module.SNAPSHOT_EVERY_BYTES
            and self.staging.staged_lsn.get(pg_id, 0) <= limit
        }
        for pg_id, reply in self._stage_requests(requests, snapshot=True).items():
            if reply is not None and not reply.problem:
                self.staging.bytes_since_snapshot[pg_id] = 0

    def _expire_backups(self, now: float) -> bool:
        """Deletes what no restore inside the retention period needs; True if it moved
        the earliest restorable time.

        For each PG the newest page snapshot at or below the horizon's VDL stays,
        with every LOG object after it; older snapshots and LOG objects go.
        Restores before the horizon are then given up for the whole volume.
        """
        store = self.backup_store
        assert store is not None
        # A restore inside the retention period may need what a backtrack up to a
        # window before it hid (its version shows the state at the backtrack's
        # target): keep one backtrack window more.
        horizon = (
            now
            - self.backup_options.retention_days * backup_module.DAY
            - self.options.backtrack_window
        )
        # The writer's own list of rounds says whether anything can expire yet;
        # the store is listed only when the horizon passed a new round.
        horizon_vdl = max((vdl for vdl, time in self.staging.rounds if time <= horizon), default=0)
        if horizon_vdl <= self.staging.expired_vdl:
            return False
        self.staging.expired_vdl = horizon_vdl
        self.staging.rounds = [entry for entry in self.staging.rounds if entry[0] >= horizon_vdl]
        catalog = backup_module.BackupCatalog(store, read_rounds=False)
        deleted = False
        for name in catalog.round_names:
            # Rounds before the horizon's go; that one stays: a restore at the
            # earliest restorable time may land on one of its CPLs.
            if int(name.split("/")[1].split("-")[0]) < horizon_vdl:
                store.delete(name)
        # A snapshot inside a range some kept version hides is no base for every
        # restore (backup.restore skips it): keep what is before it too.
        hidden = merge_ranges(
            *(version.annulled for version in self.history.versions),
            truncation_ranges(self.truncations),
        )
        for pg_id in self.pgs:
            base, _ = catalog.base_snapshot(pg_id, horizon_vdl, hidden)
            if base == 0:
                continue
            for lsn, name in catalog.snapshots.get(pg_id, []):
                if lsn < base:
                    store.delete(name)
                    deleted = True
            for _, last, name in catalog.logs.get(pg_id, []):
                if last <= base:
                    store.delete(name)
                    deleted = True
        if deleted and horizon > self.staging.earliest:
            self.staging.earliest = horizon
            return True
        return False

    @property
    def restorable_window(self) -> tuple[float, float]:
        """(earliest, latest) times a point-in-time restore from this volume's backup reaches."""
        if self.backup_store is None:
            raise ConfigurationError("the volume has no backup store (create it with backup=...)")
        with self.transport.lock:
            self._stage_quietly()  # a failed round leaves the window where it was
            return backup_module.BackupCatalog(self.backup_store).window()

    @classmethod
    def restore(
        cls,
        backup: Any,
        to: float | datetime,
        path: str | os.PathLike[str] | None = None,
        *,
        progress: backup_module.Progress | None = None,
        backup_to: Any = None,
        **options: Any,
    ) -> Volume:
        """Point-in-time restore: a new volume with exactly the commits at or before ``to``.

        Reads only the backup store (a folder, a URL, or a store object); the
        source volume may be gone. ``options`` are those of :meth:`create`;
        ``backup_to`` is the new volume's own continuous backup (``create``'s
        ``backup``), which begins with its pages at the restore point. Raises
        TimeOutsideWindowError outside the restorable window,
        BackupCorruptError or BackupObjectMissingError naming a damaged or
        missing object, RestoreError for a gap.
        """
        if backup_to is not None:
            options["backup"] = backup_to
        return backup_module.restore(backup, to, path, progress=progress, **options)

    def _lal_base(self) -> int:
        """LSNs in flight count from VDL, or from the end of the last truncation above it."""
        return max([self._vdl, *(hi for _, _, hi in self.truncations)])

    def min_read_point(self) -> int:
        """Oldest read point any reader or the backtrack window may still need.

        Versions below it may be coalesced away by segments.
        """
        return min([self._vdl, *self._pinned, self._window_floor()])

    # --- backtrack ------------------------------------------------------------------

    def _note_commit(self, time: float, cpl: int, size: int) -> None:
        self._window_commits.append((time, cpl, size))
        self._window_bytes += size

    def _window_floor(self) -> int:
        """LSN below which no backtrack can reach: the last commit before the window."""
        if not self.options.backtrack_window:
            return self._vdl
        start = self.clock.now() - self.options.backtrack_window
        budget = self.options.backtrack_budget
        commits = self._window_commits
        while commits and (
            commits[0][0] < start or (budget and self._window_bytes > budget and len(commits) > 1)
        ):
            time, cpl, size = commits.popleft()
            self._window_bytes -= size
            self._window_floor_lsn = cpl
            self._window_floor_time = max(self._window_floor_time, time)
        self._window_floor_time = max(self._window_floor_time, start, self.history.created_at)
        if self.backup_store is None:  # a backup needs old versions for its restores
            self.history.forget_before(self._window_floor_time)
        return self._window_floor_lsn

    @property
    def backtrack_window(self) -> tuple[float, float]:
        """(earliest, latest) times backtrack can reach now; raises if backtrack is off."""
        if not self.options.backtrack_window:
            raise BacktrackDisabledError()
        with self.transport.lock:
            self._window_floor()
            return self._window_floor_time, max(self.clock.now(), self._last_commit_time)

    def _last_commit_at(
        self, moment: float, annulled: tuple[int, ...] | None = None
    ) -> tuple[int, float]:
        """(CPL, time) of the last visible commit at or before ``moment``, asking the nodes.

        Each node bisects its segments' time indexes; a read quorum of trusted
        answers is needed, since every durable CPL is on four nodes of six.
        """
        if annulled is None:
            version = self.history.at(moment)
            hidden = version.annulled if version is not None else ()
            annulled = merge_ranges(hidden, truncation_ranges(self.truncations))
        request_id = next(self._request_ids)
        answers: dict[str, m.TimeAnswer] = {}
        self._time_answers[request_id] = answers
        live = [name for name, node in self.nodes.items() if self.cluster.is_up(name)]
        try:
            query = m.TimeQuery(request_id, moment, annulled)
            for name in live:
                self.transport.send(self.writer_name, name, query)
            self.transport.run_until(lambda: len(answers) == len(live), READ_TIMEOUT)
        finally:
            del self._time_answers[request_id]
        trusted = [answer for answer in answers.values() if answer.trusted]
        if len(trusted) < READ_QUORUM:
            raise ReadUnavailableError(
                0,
                0,
                f"only {len(trusted)} nodes answered the time index query; {READ_QUORUM} needed",
            )
        best = max(trusted, key=lambda answer: answer.cpl)
        return best.cpl, best.time

    def backtrack(self, to: float | datetime) -> BacktrackResult:
        """Rewinds the live volume to its last commit at or before ``to``, in place.

        Non-destructive: the undone commits stay until they leave the window, so
        a later backtrack may move forward again to any time in the window.
        Writes afterwards get LSNs above everything ever allocated. Raises
        :class:`BacktrackDisabledError`, :class:`TimeOutsideWindowError`, or a
        quorum error; on any error nothing changes.
        """
        self._check_open()
        target = to_seconds(to)
        with self.transport.lock:
            earliest, latest = self.backtrack_window
            if not earliest <= target <= latest:
                raise TimeOutsideWindowError(target, earliest, latest)
            if self.allocated_lsn > self._lal_base() and not self.transport.run_until(
                lambda: self._lal_base() >= self.allocated_lsn, self.options.commit_timeout
            ):
                raise WriteQuorumError(
                    self.allocated_lsn, self._vdl, "backtrack waits for every commit to be durable"
                )
            version = self.history.at(target)
            assert version is not None, "the window starts after the volume was created"
            cpl, cpl_time = self._last_commit_at(target)
            hidden = version.annulled
            if cpl < self.allocated_lsn:
                hidden = merge_ranges(hidden, (cpl, self.allocated_lsn))
            now = max(self.clock.now(), self._last_commit_time)
            new = HistoryVersion(self.history.current.version + 1, now, hidden, "backtrack")
            candidate = History([*self.history.versions, new])
            self._history_acks = set()
            message = m.SetHistory(self.epoch, encode_history(candidate))
            previous = self.history
            self.history = candidate
            for name in self.nodes:
                self.transport.send(self.writer_name, name, message)
            if not self.transport.run_until(
                lambda: len(self._history_acks) >= WRITE_QUORUM, self.options.commit_timeout
            ):
                self.history = previous
                self._raise_if_fenced()
                raise WriteQuorumError(
                    self._vdl,
                    self._vdl,
                    f"the backtrack reached {len(self._history_acks)} nodes, {WRITE_QUORUM} needed",
                )
            self._last_commit_time = now
            self._refresh_annulled()
            return BacktrackResult(target, cpl, cpl_time, new.version)

    @contextmanager
    def read_view(self, lsn: int | None = None) -> Iterator[int]:
        """Pins a read point (default VDL) so segments keep its versions while the block runs."""
        read_point = self._vdl if lsn is None else lsn
        if not 0 <= read_point <= self._vdl:
            raise LsnOutOfRangeError(read_point, self._vdl)
        self._pinned.append(read_point)
        try:
            yield read_point
        finally:
            self._pinned.remove(read_point)

    def _quorum_detail(self, sends: list[tuple[ProtectionGroup, bytes]]) -> str:
        parts = []
        for pg, _frame in sends:
            if pg.first_unacknowledged() is not None:
                acked = sorted(node for node, scl in pg.scls.items() if scl >= pg.tail_lsn)
                parts.append(
                    f"PG {pg.pg_id} acknowledged by {len(acked)} of 6 ({', '.join(acked)})"
                )
        blocked = [pg.pg_id for pg in self.pgs.values() if pg.first_unacknowledged() is not None]
        return "; ".join(parts) or f"an earlier commit in PG {blocked} still lacks a write quorum"

    def _retransmissions(self) -> list[tuple[str, m.Message]]:
        """Frames without a write quorum, addressed to the segments that lack them."""
        out: list[tuple[str, m.Message]] = []
        for pg in self.pgs.values():
            for outstanding in pg.outstanding:
                message = m.WriteFrames(self.epoch, pg.pg_id, (outstanding.frame,))
                out += [(node, message) for node in pg.lagging(outstanding)]
        return out

    def _retransmit(self) -> None:
        for destination, message in self._retransmissions():
            self.transport.send(self.writer_name, destination, message)

    def _settle(self) -> None:
        self.transport.run_until(lambda: False, 0.0)

    # --- reads ------------------------------------------------------------------------

    def read_page(self, page_no: int, lsn: int | None = None) -> bytes:
        """The page's bytes at ``lsn`` (default: the current VDL), from one segment."""
        with self.transport.lock:
            return self._read_page_locked(page_no, lsn)

    def _read_page_locked(self, page_no: int, lsn: int | None) -> bytes:
        self._check_open()
        if not isinstance(page_no, int) or not 0 <= page_no < self.geometry.page_count:
            raise PageOutOfRangeError(page_no, self.geometry.page_count)
        read_point = self._vdl if lsn is None else lsn
        if not isinstance(read_point, int) or not 0 <= read_point <= self._vdl:
            raise LsnOutOfRangeError(read_point, self._vdl)
        pg = self.pgs.get(self.geometry.pg_of(page_no))
        if pg is None or read_point == 0:
            return bytes(self.geometry.page_size)
        required = min(read_point, pg.tail_lsn)
        candidates = pg.readable_nodes(required)
        if self.read_latency:
            candidates.sort(key=lambda node: (self.read_latency.get(node, 0.0), node))
        if not candidates:
            raise ReadUnavailableError(page_no, read_point, "no segment has acknowledged it")
        if self._direct:
            return self._read_direct(pg.pg_id, page_no, read_point, required, candidates)
        request_id = next(self._request_ids)
        request = m.ReadPage(request_id, pg.pg_id, page_no, read_point, required, self.annulled)
        pending = self._reads[request_id] = _PendingRead(page_no)
        asked: list[str] = []
        try:
            for node in candidates:
                asked.append(node)
                started = self.transport.now()
                self.transport.send(self.writer_name, node, request)
                answered = functools.partial(_answered_by, pending, node)
                if (
                    self.transport.run_until(answered, READ_HEDGE_DELAY)
                    and pending.image is not None
                ):
                    self._note_latency(node, self.transport.now() - started)
                    return pending.image
            # Every candidate was asked; wait a while longer for a late answer.
            if (
                self.transport.run_until(
                    lambda: pending.image is not None or len(pending.answered) == len(asked),
                    READ_TIMEOUT,
                )
                and pending.image is not None
            ):
                return pending.image
        finally:
            del self._reads[request_id]
        for node in asked:
            if node not in pending.answered:
                self._note_latency(node, READ_TIMEOUT)
        if any(problem.endswith(GONE) for problem in pending.problems):
            raise VersionGoneError(page_no, read_point)
        detail = "; ".join(pending.problems) or f"no answer from {', '.join(asked)}"
        raise ReadUnavailableError(page_no, read_point, detail)

    def _read_direct(
        self, pg_id: int, page_no: int, read_point: int, required: int, candidates: list[str]
    ) -> bytes:
        """The in-process read: one synchronous call per segment, in order of preference.

        The direct transport's nodes live in this process, so the request is a
        method call (no message objects); a node that is down or cut off is
        skipped as it would be on the wire.
        """
        problems = []
        writer = self.writer_name
        for name in candidates:
            if not self.transport.link_open(writer, name):
                problems.append(f"{name}: no answer")
                continue
            image, problem, _ = self.nodes[name].serve_read(
                pg_id, page_no, read_point, required, self.annulled
            )
            if not problem:
                return image
            problems.append(f"{name}: {problem}")
        if any(problem.endswith(GONE) for problem in problems):
            raise VersionGoneError(page_no, read_point)
        raise ReadUnavailableError(page_no, read_point, "; ".join(problems))

    def _note_latency(self, node: str, seconds: float) -> None:
        previous = self.read_latency.get(node, seconds)
        self.read_latency[node] = 0.8 * previous + 0.2 * seconds

    # --- status and lifecycle -------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Nodes, AZs, health, SCLs, PG count, bytes, and the history windows, as plain data."""
        with self.transport.lock:
            nodes: list[dict[str, Any]] = []
            for node in self.nodes.values():
                disk_bytes = 0
                if node.disk is not None and not node.failed:
                    disk_bytes = sum(node.disk.size(name) for name in node.disk.list())
                nodes.append(
                    {
                        "name": node.name,
                        "az": node.az,
                        "up": self.cluster.is_up(node.name),
                        "failed": node.failed,
                        "suspect": node.suspect or any(s.suspect for s in node.segments.values()),
                        "problems": node.problems(),
                        "epoch": node.epoch,
                        "segments": len(node.segments),
                        "memory_bytes": sum(s.bytes_used() for s in node.segments.values()),
                        "shared_bytes": sum(s.shared_bytes() for s in node.segments.values()),
                        "disk_bytes": disk_bytes,
                    }
                )
            # Memory of the page images replicas share (a restore's), counted once:
            # every block some segment still borrows, whole, whatever replicas did since.
            blocks = {
                id(block.obj): block.nbytes
                for node in self.nodes.values()
                for segment in node.segments.values()
                for block in segment.page_log.shared_blocks()
            }
            shared_bytes = sum(blocks.values())
            in_memory = all(node.disk is None for node in self.nodes.values())
            pgs = [
                {
                    "pg": pg.pg_id,
                    "pgcl": pg.pgcl,
                    "tail_lsn": pg.tail_lsn,
                    "scls": {node: pg.scls.get(node, 0) for node in pg.quorum.members},
                    "unacknowledged_frames": len(pg.outstanding),
                }
                for pg in sorted(self.pgs.values(), key=lambda pg: pg.pg_id)
            ]
            result: dict[str, Any] = {
                "path": self.path,
                "epoch": self.epoch,
                "page_size": self.geometry.page_size,
                "pages_per_pg": self.geometry.pages_per_pg,
                "capacity_bytes": self.geometry.page_count * self.geometry.page_size,
                "durability": self.options.durability,
                "allocated_lsn": self.allocated_lsn,
                "vcl": self._vcl,
                "vdl": self._vdl,
                "pg_count": len(self.pgs),
                "nodes": nodes,
                "pgs": pgs,
                "bytes_used": sum(n["disk_bytes"] or n["memory_bytes"] for n in nodes)
                + (shared_bytes if in_memory else 0),
                "shared_bytes": shared_bytes,
                "truncations": [list(t) for t in self.truncations],
                "history_version": self.history.current.version,
            }
            if self.options.backtrack_window:
                earliest, latest = self.backtrack_window
                result["backtrack"] = {
                    "window_target_seconds": self.options.backtrack_window,
                    "window_actual_seconds": latest - earliest,
                    "earliest": earliest,
                    "latest": latest,
                    "change_records_stored": len(self._window_commits),
                    "change_bytes_stored": self._window_bytes,
                    "budget_bytes": self.options.backtrack_budget,
                }
            if self.backup_store is not None:
                earliest, latest = self.restorable_window
                result["backup"] = {
                    "store": repr(self.backup_store),
                    "retention_days": self.backup_options.retention_days,
                    "staging_interval_seconds": self.backup_options.staging_interval,
                    "earliest_restorable": earliest,
                    "latest_restorable": latest,
                    "staged_vdl": self.staging.last_round_vdl,
                    "last_error": self.staging.last_error,
                }
            return result

    def simulate_crash(self) -> None:
        """Stops the writer as a crash would, for demos and tests.

        Nothing more is sent or flushed and node metadata is not rewritten; the
        folder lock is released so the volume can be opened again (recovery).
        Storage keeps exactly what it had made durable.
        """
        with self.transport.lock:
            self._closed = True
            for node in self.nodes.values():
                if isinstance(node.disk, RealDisk):
                    node.disk.close(trim=False)  # a crash leaves preallocated zeros
            if self._owns_transport:
                self.transport.close()
        self._release_lock()

    def close(self) -> None:
        """Waits for fsyncs in flight, syncs and records node metadata, releases the folder."""
        if self._closed:
            return
        with self.transport.lock:
            self._closed = True
            self.transport.wait_for_syncs()
            if self._flusher is not None:
                self._flusher.close()  # its thread goes now (no flush is in flight)
            for node in self.nodes.values():
                if self.transport.link_open(node.name, node.name):
                    node.close()
                if isinstance(node.disk, RealDisk):
                    node.disk.close()  # trims the logs' preallocated zeros
                for segment in node.segments.values():
                    segment.page_log.close()  # C memory goes now, not at garbage collection
            if self._owns_transport:
                self.transport.close()
        self._release_lock()

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
