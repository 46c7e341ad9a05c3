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

import bisect
import contextlib
import fcntl
import functools
import itertools
import math
import os
import shutil
import uuid
from array import array
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from . import backup as backup_module
from . import checks, native
from .backup.staging import Stager
from .backup.staging import default_mode as staging_mode
from .backup.store import (
    KIND_HISTORY,
    BackupStore,
    StoreLocation,
    decode_object,
    open_store,
    store_location,
)
from .clock import (
    Clock,
    Duration,
    Moment,
    SimulatedClock,
    WallClock,
    format_time,
    parse_target,
    resolve_target,
    to_duration,
)
from .errors import (
    AuroraStorageError,
    BacktrackDisabledError,
    BacktrackQuorumError,
    BackupObjectMissingError,
    CommitAnnulledError,
    ConfigurationError,
    CorruptionError,
    DegradedVolumeError,
    InDoubtError,
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
    StorageWriteError,
    TimeOutsideWindowError,
    UnknownNodeError,
    VersionGoneError,
    VolumeClosedError,
    VolumeExistsError,
    VolumeIncompleteError,
    VolumeInUseError,
    VolumeNotFoundError,
    VolumeReadOnlyError,
    WriteQuorumError,
)
from .format import frames as log
from .format import metadata as metafile
from .format import records
from .native.flush import Flusher
from .protocol import messages as m
from .protocol import recovery
from .protocol.hedging import ReadRanking
from .protocol.history import (
    NO_KEY,
    History,
    HistoryVersion,
    flatten_truncations,
    inside,
    merge_ranges,
    newest,
    truncation_ranges,
)
from .protocol.node import (
    GONE,
    WRITER,
    StorageNode,
    checkpoint_object,
    decode_history,
    encode_history,
    group_syncer,
)
from .protocol.protection_group import (
    READ_QUORUM,
    WRITE_QUORUM,
    Outstanding,
    ProtectionGroup,
    QuorumSet,
)
from .protocol.recovery import RecoveryPlan
from .protocol.segment import Geometry, SharedImages
from .runtime.disk import Disk, RealDisk, make_folders, sync_folder
from .runtime.transport import DirectTransport, SimulatedTransport, Transport
from .status import BackupStatus, NodeStatus, PgStatus, VolumeStatus

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
# "wall": Unix time; "simulated": a SimulatedClock's; "other": a clock of the caller's.
# A volume's times are on the clock it was made with (tools on the wall clock check it).
CLOCK_KINDS = ("wall", "simulated", "other")
VOLUME_META = "volume.meta"
BACKTRACK_WINDOW_MAX = 72 * 3600.0
LOCK_FILE = "volume.lock"
# Present from the first byte a create or restore writes until the volume is
# whole: such a folder never opens, and a new create or restore clears it.
UNFINISHED_MARKER = "volume.unfinished"
# What an unfinished create or restore may leave in its folder (and nothing else).
_UNFINISHED_NAMES = frozenset(
    {UNFINISHED_MARKER, LOCK_FILE, VOLUME_META, VOLUME_META + ".tmp", UNFINISHED_MARKER + ".tmp"}
    | {"nodes"}
)
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
    clock: str = "wall"  # the kind of clock the volume was made with (CLOCK_KINDS)

    def check(self) -> None:
        """Validates every option (types too) and puts each in its canonical type."""
        self.page_size = checks.integer("page_size", self.page_size)
        self.segment_size = checks.integer("segment_size", self.segment_size)
        self.capacity = checks.integer("capacity", self.capacity)
        self.lal = checks.integer("lal", self.lal)
        self.backtrack_budget = checks.integer("backtrack_budget", self.backtrack_budget)
        self.commit_timeout = checks.seconds("commit_timeout", self.commit_timeout)
        self.backtrack_window = checks.seconds("backtrack_window", self.backtrack_window)
        checks.choice("durability", self.durability, DURABILITY_MODES)
        checks.choice("clock", self.clock, CLOCK_KINDS)
        if self.backend is not None:
            checks.choice("backend", self.backend, native.BACKEND_NAMES)
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


_KIND_WRITE_SHAPE = records.KIND_WRITE << records.SHAPE_KIND_SHIFT
_KIND_PAGE_SHAPE = records.KIND_PAGE << records.SHAPE_KIND_SHIFT
_KIND_ZERO_SHAPE = records.KIND_ZERO << records.SHAPE_KIND_SHIFT
_OFFSET_SHIFT = records.SHAPE_OFFSET_SHIFT
_HEADER_BYTES = records.RECORD_HEADER_SIZE


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

    def __repr__(self) -> str:
        if not self._done:
            return f"<Transaction open: {self._records} records in {len(self._pgs)} PGs>"
        if self.lsn:
            return f"<Transaction committed at LSN {self.lsn}>"
        return "<Transaction ended: nothing committed>"

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
    answered: dict[str, float] = field(default_factory=dict)  # node: transport time


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


def _failed_nodes(nodes: dict[str, StorageNode]) -> str:
    """The stopped nodes with their reasons (a disk's OS error), for an error's message."""
    failed = [f"{name} ({node.failed})" for name, node in nodes.items() if node.failed]
    return f"; failed nodes: {', '.join(failed)}" if failed else ""


def _replace_volume_meta(root: Path, durability: str, body: dict[str, Any]) -> None:
    """Replaces volume.meta atomically; a disk that cannot write raises StorageWriteError."""
    data = metafile.encode(metafile.KIND_VOLUME, body)
    try:
        RealDisk(root, "fsync" if durability == "fsync" else "os").replace(VOLUME_META, data)
    except OSError as error:
        raise StorageWriteError(f"{root / VOLUME_META}: write failed: {error}") from None


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
        "clock": options.clock,
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
            clock=str(body.get("clock", "wall")),
        )
        volume_id = str(body["volume_id"])
        base = (int(body.get("base_lsn", 0)), float(body.get("base_time", 0.0)))
        stored_backup = None
        if body.get("backup") or body.get("backup_object"):
            target: Any = StoreLocation(
                str(body.get("backup", "")), dict(body.get("backup_storage_options") or {})
            )
            if body.get("backup_object"):
                target = RecordedObject(str(body["backup_object"]))
            stored_backup = backup_module.BackupOptions(
                target,
                float(body["backup_retention_days"]),
                float(body["backup_staging_interval"]),
            )
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptionError(f"{where}: missing or bad field ({error})") from None
    options.check()
    return options, volume_id, stored_backup, base


@dataclass(frozen=True)
class RecordedObject:
    """volume.meta's record of a backup store given as an object at create (a
    MemoryStore, say): a reopen cannot find it, and must be given it again."""

    name: str


def clock_kind(clock: Clock) -> str:
    """What volume.meta records of a clock (CLOCK_KINDS)."""
    if isinstance(clock, WallClock):
        return "wall"
    return "simulated" if isinstance(clock, SimulatedClock) else "other"


def recorded_clock(path: str | os.PathLike[str]) -> str:
    """The kind of clock the volume at ``path`` was made with (volume.meta)."""
    options, *_ = _read_volume_meta(checks.path(path))
    return options.clock


def _check_collaborators(clock: Any, transport: Any, disks: Any) -> None:
    """The objects create and open take: a clock, a transport, node disks by name."""
    if clock is not None and not callable(getattr(clock, "now", None)):
        raise InvalidArgumentError(f"clock must have a now() method, not {clock!r}")
    if transport is not None and not isinstance(transport, Transport):
        raise InvalidArgumentError(f"transport must be a Transport, not {transport!r}")
    if disks is not None and (not isinstance(disks, dict) or sorted(disks) != sorted(NODE_NAMES)):
        raise InvalidArgumentError(f"disks must map each of {', '.join(NODE_NAMES)} to a disk")


def _lock_folder(root: Path) -> Any:
    """Takes the volume folder's writer lock (flock, held until released); raises
    VolumeInUseError if another writer holds it."""
    try:
        handle = open(root / LOCK_FILE, "a+b")  # noqa: SIM115 (held until released)
    except OSError as error:
        raise StorageWriteError(f"{root}: cannot take the writer lock: {error}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise VolumeInUseError(str(root)) from None
    return handle


def _free_for_a_new_volume(root: Path) -> bool:
    """True if ``root`` is empty (but for a lock file) or holds only what an
    unfinished create or restore left, its marker among it."""
    names = {entry.name for entry in root.iterdir()}
    return not names - {LOCK_FILE} or (UNFINISHED_MARKER in names and names <= _UNFINISHED_NAMES)


def _claim_new_folder(root: Path, sync: bool) -> tuple[Any, bool]:
    """Makes ``root`` ready for a new volume: (its lock, True if the folder was made).

    The folder must be missing, empty, or hold only what an unfinished create or
    restore left (its marker present), which is cleared under the lock. The
    marker is then written, durably, before anything else.
    """
    made = not root.exists()
    if not made and (not root.is_dir() or not _free_for_a_new_volume(root)):
        raise VolumeExistsError(str(root))
    try:
        make_folders(root, sync)
    except OSError as error:
        raise InvalidArgumentError(f"{root}: cannot make the folder: {error}") from None
    lock = _lock_folder(root)
    try:
        # Again under the lock: another create may have finished a volume here since.
        if not _free_for_a_new_volume(root):
            raise VolumeExistsError(str(root))
        for entry in root.iterdir():  # an unfinished volume's leftovers
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        RealDisk(root, "fsync" if sync else "os").replace(UNFINISHED_MARKER, b"")
    except OSError as error:
        lock.close()
        raise StorageWriteError(f"{root}: cannot prepare the folder: {error}") from None
    except BaseException:
        lock.close()
        raise
    return lock, made


def _clear_new_folder(root: Path, made: bool) -> None:
    """Removes what a failed create or restore wrote (the folder too if it made it)."""
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            if entry.name in _UNFINISHED_NAMES - {UNFINISHED_MARKER, LOCK_FILE}:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        # The marker goes last: until then the folder never opens.
        (root / UNFINISHED_MARKER).unlink(missing_ok=True)
        (root / LOCK_FILE).unlink(missing_ok=True)
        if made:
            root.rmdir()


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
        self._volume._check_open()
        self._volume._refuse_if_readonly("a node control")
        if not isinstance(name, str):
            raise UnknownNodeError(repr(name), [*self.nodes, *AZS])
        if name in self.nodes:
            return [name]
        members = [node.name for node in self.nodes.values() if node.az == name]
        if not members:
            raise UnknownNodeError(name, [*self.nodes, *AZS])
        return members

    def is_up(self, name: str) -> bool:
        if not isinstance(name, str) or name not in self.nodes:
            raise UnknownNodeError(repr(name) if not isinstance(name, str) else name, [*self.nodes])
        return name not in self._volume.transport.down

    def fail_node(self, name: str) -> None:
        """The node stops answering; what it stored stays on its disk."""
        for node_name in self._names(name):
            self._volume.transport.set_down(node_name, True)

    def fail_az(self, az: str) -> None:
        if not isinstance(az, str) or az not in AZS:
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
            volume.read_ranking.forget(node_name)
            for destination, message in node.restart():
                volume.transport.send(node_name, destination, message)
        volume._retransmit()
        volume._settle()

    def restore_az(self, az: str) -> None:
        if not isinstance(az, str) or az not in AZS:
            raise UnknownNodeError(az, list(AZS))
        self.restore_node(az)

    def partition(self, *groups: Any) -> None:
        """Cuts links between groups of endpoint names ("writer" and node names)."""
        self._volume._check_open()
        self._volume._refuse_if_readonly("a partition")
        known = {self._volume.writer_name, *self.nodes}
        for group in groups:
            if not isinstance(group, list | tuple | set | frozenset):
                raise InvalidArgumentError(f"a partition group is a list of names, not {group!r}")
            for name in group:
                if not isinstance(name, str) or name not in known:
                    raise UnknownNodeError(name, sorted(known))
        self._volume.transport.partition(groups)

    def heal(self) -> None:
        volume = self._volume
        volume._check_open()
        volume._refuse_if_readonly("a heal")
        volume.transport.heal()
        for node in self.nodes.values():
            volume.read_ranking.forget(node.name)
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
        self._window_answers: dict[int, dict[str, m.WindowAnswer]] = {}
        # Nodes that acknowledged the history write with _history_write_key.
        self._history_acks: set[str] = set()
        self._history_write_key = self.history.key
        # In doubt (README.md, "When a commit or backtrack fails": no later change may
        # build on a state that excludes them):
        # CPLs of commits that raised WriteQuorumError and are not yet durable, and
        # the target time of a backtrack that raised and whose history may be on
        # some nodes until the one this session keeps is rewritten on a write quorum.
        self._in_doubt: list[int] = []
        self._history_in_doubt: float | None = None
        # Why recovery could not put its decision on a write quorum (the volume then
        # serves reads and allocates nothing); empty when it could.
        self._degraded = ""
        self.backup_options = backup_module.BackupOptions()
        self.backup_store: BackupStore | None = None
        self.staging = backup_module.StagingState()
        self._stager: Stager | None = None  # runs staging rounds once a backup is attached
        self._staged: dict[int, m.Staged | None] = {}
        self.restored_from: tuple[float, int] | None = None
        # A restored volume begins at base_lsn (its first CPL, at base_time): nothing
        # below it exists in its segments (recorded in volume.meta; where a backup
        # begins is staging.base).
        self.base_lsn = 0
        self.base_time = 0.0
        self._pinned: list[int] = []
        self.read_ranking = ReadRanking(READ_HEDGE_DELAY)  # hedging.py
        self.recovery: RecoveryPlan | None = None
        self._recovery_states: dict[str, m.RecoveryState] = {}
        self._truncated: set[str] = set()
        self._lock_handle: Any = None
        # A volume being created or restored: whether its folder was made for it
        # (removed if the create fails); None once whole.
        self._unfinished_folder: bool | None = None
        self._shut_down = False  # threads, descriptors and memory released (close, _discard)
        # Opened with readonly=True: nothing is written (_open_readonly).
        self.readonly = False
        self._readonly_backup: Any = None
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
            # Node folders may differ in what their flush needs (a data-journal flag
            # on one, flush.py): syncfs serves all of them.
            methods = {
                n.disk.flush_method for n in self.nodes.values() if isinstance(n.disk, RealDisk)
            }
            method = methods.pop() if len(methods) == 1 else "syncfs"
            assert method is not None
            self._flusher = Flusher(method, options.backend)
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
        if node.failed:  # stopped by a disk error before it was registered (create)
            node.on_stop()
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
            except (AuroraStorageError, OSError) as error:
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
        commit_timeout: Duration = COMMIT_TIMEOUT,
        disks: dict[str, Disk] | None = None,
        backtrack_window: Duration = 0.0,
        backtrack_budget: int = 0,
        backup: Any = None,
        backup_retention_days: float | timedelta = 1.0,
        backup_staging_interval: Duration = backup_module.STAGING_INTERVAL_DEFAULT,
        backup_staging: str | None = None,
        _finished: bool = True,
    ) -> Volume:
        """A new empty volume of six nodes in three AZs.

        With a ``path``, nodes keep their segments in ``path/nodes/<name>`` and
        ``durability`` defaults to ``"fsync"``; without one, to ``"memory"``.
        ``disks`` replaces the node folders by given disks (crash tests).
        ``backup`` (a folder, a URL, or a BackupStore) turns on continuous
        backup, kept ``backup_retention_days`` (1 to 35), staged every
        ``backup_staging_interval`` seconds, by a worker thread
        (``backup_staging="background"``, the default on a wall clock) or by
        the committing thread (``"inline"``, the default on a simulated clock). A
        node whose disk cannot write (full or failing) is stopped and named in
        ``status()``; with fewer than four nodes left, :class:`StorageWriteError`
        names them with their OS errors. Durations (``commit_timeout``,
        ``backtrack_window``, ``backup_staging_interval``) are seconds or a
        ``timedelta``; ``backup_retention_days`` is days or a ``timedelta``.
        """
        root = None if path is None else checks.path(path)
        _check_collaborators(clock, transport, disks)
        backup_options = backup_module.BackupOptions.of(
            backup, backup_retention_days, backup_staging_interval, backup_staging
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
            to_duration(commit_timeout, "commit_timeout"),
            to_duration(backtrack_window, "backtrack_window"),
            backtrack_budget,
        )
        clock = clock or getattr(transport, "clock", None) or WallClock()
        options.clock = clock_kind(clock)
        options.check()
        if durability != "memory" and path is None and disks is None:
            raise ConfigurationError(f"durability {durability!r} needs a path")
        volume_id = uuid.uuid4().hex
        lock, made = None, False
        if root is not None:
            # The folder is new (made durable in its parent) or empty, or holds an
            # unfinished volume, cleared; its marker stays until the volume is whole.
            lock, made = _claim_new_folder(root, durability == "fsync")
        volume: Volume | None = None
        try:
            nodes = _make_nodes(options, root, volume_id, disks)
            # The first history write: epoch 1, sequence 1, on every node.
            history = History.new(clock.now(), options.backtrack_window).keyed((1, 1))
            for node in nodes.values():
                node.history = history.keyed(history.key)  # each node its own copy
                node.write_meta()  # a node that cannot write stops: failed says why
            written = sum(not node.failed for node in nodes.values())
            if written < WRITE_QUORUM:
                raise StorageWriteError(
                    f"node.meta of the new volume reached {written} of 6 nodes, {WRITE_QUORUM} "
                    f"needed{_failed_nodes(nodes)}"
                )
            if root is not None:
                _replace_volume_meta(root, durability, _volume_body(options, volume_id))
            volume = cls(options, path, clock, transport, nodes=nodes, volume_id=volume_id)
            volume._lock_handle, lock = lock, None
            volume._unfinished_folder = made if root is not None else None
            volume.history = history
            volume._history_write_key = history.key
            if backup is not None:
                volume._attach_backup(backup_options)
            if _finished:
                volume._finish_creation()
        except BaseException:
            if volume is not None:
                volume._discard_unfinished()
            elif root is not None:
                _clear_new_folder(root, made)
            if lock is not None:
                lock.close()
            raise
        return volume

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
            _clear_new_folder(Path(self.path), self._unfinished_folder)
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

    def _attach_backup(self, options: backup_module.BackupOptions) -> None:
        """Turns continuous backup on: the store's catalog is read once, here (a few
        store calls: its names and newest round), then kept in memory."""
        store = open_store(options.target)
        try:
            data: bytes | None = store.get(backup_module.HISTORY_NAME)
        except BackupObjectMissingError:
            data = None
        if data is None and self._vdl:
            # A new backup of a volume with history: its segments may have folded and
            # trimmed old frames, so it begins with page images at today's VDL.
            now = self.clock.now()
            self.staging.base = (self._vdl, now)
            self.staging.earliest = max(self.staging.earliest, now)
        if data is not None:
            meta, _ = decode_object(data, backup_module.HISTORY_NAME, KIND_HISTORY)
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
        self._stager = Stager(self, store, options.staging or staging_mode(self))
        self._write_volume_meta()  # where the backup goes, for the next open

    def _write_volume_meta(self) -> None:
        """Replaces volume.meta: options, the backup when given by path, the base LSN."""
        if self.path is None:
            return
        body = _volume_body(self.options, self.volume_id)
        target = self.backup_options.target
        if target is not None:
            # Recorded so that a reopen keeps backing up: a folder (absolute), or a URL
            # with its fsspec storage options; a store that lives only in this process
            # is named, and must be given again at open.
            location = store_location(target)
            if location is None:
                body["backup_object"] = repr(target)
            else:
                body["backup"] = location.url
                if location.storage_options:
                    body["backup_storage_options"] = location.storage_options
            body["backup_retention_days"] = self.backup_options.retention_days
            body["backup_staging_interval"] = self.backup_options.staging_interval
        if self.base_lsn:
            body["base_lsn"] = self.base_lsn
            body["base_time"] = self.base_time
        _replace_volume_meta(Path(self.path), self.options.durability, body)

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
                node.persist_start(lsn, checkpoints)  # a node that cannot write stops
            written = sum(not node.failed for node in self.nodes.values())
            if written < WRITE_QUORUM:
                raise StorageWriteError(
                    f"the restored pages reached {written} of 6 nodes, {WRITE_QUORUM} "
                    f"needed{_failed_nodes(self.nodes)}"
                )
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
        backup_staging: str | None = None,
        readonly: bool = False,
    ) -> Volume:
        """Opens a volume and recovers it: everything committed is there, nothing else.

        A node whose files are damaged is set aside, whole (an unreadable
        node.meta) or per segment (StorageNode.load); the volume opens while a
        read quorum of every PG can vouch for its data.

        Raises :class:`VolumeNotFoundError` for a folder that is not a volume,
        :class:`FormatVersionError` for a newer format, :class:`MissingNodeError`
        when node folders are gone (unless ``rebuild_missing``),
        :class:`SegmentRepairNeededError` when a missing node cannot be rebuilt
        (its peers no longer hold the frames it lacks), and
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
        _check_collaborators(clock, transport, disks)
        if readonly:
            if root is None or disks is not None or transport is not None:
                raise ConfigurationError("a read-only open takes a volume's path (no disks)")
            return cls._open_readonly(root, clock, backend, backup)
        backup_options = backup_module.BackupOptions(backup, staging=backup_staging)
        base = (0, 0.0)
        if root is not None:
            if (root / UNFINISHED_MARKER).exists():
                raise VolumeIncompleteError(str(root))
            options, volume_id, stored_backup, base = _read_volume_meta(root)
            if backup is None and stored_backup is not None:
                if isinstance(stored_backup.target, RecordedObject):
                    raise ConfigurationError(
                        f"{root} backs up to a store given as an object at create "
                        f"({stored_backup.target.name}): give it again, "
                        "Volume.open(path, backup=store)"
                    )
                backup_options = stored_backup
                backup_options.staging = backup_staging
        backup_options.check()
        if options is None:
            raise ConfigurationError("Volume.open needs a path, or options with disks")
        if backend is not None:
            options.backend = backend
        missing: list[str] = []
        if root is not None and disks is None:
            missing = [name for name in NODE_NAMES if not (root / "nodes" / name).exists()]
            if missing and not rebuild_missing:
                raise MissingNodeError(str(root), missing)
        # The lock first: a volume held by another writer starts no thread here.
        lock = _lock_folder(root) if root is not None else None
        try:
            nodes = _make_nodes(options, root, volume_id, disks)
            volume = cls(options, path, clock, transport, nodes=nodes, volume_id=volume_id)
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        volume._lock_handle = lock
        volume.base_lsn, volume.base_time = base
        try:
            for node in nodes.values():
                try:
                    node.load()
                except (AuroraStorageError, OSError) as error:
                    # A node that cannot load is down; the others may still form quorums.
                    node.failed = f"cannot load: {error}"
                    volume.transport.set_down(node.name, True)
            volume._recover()
            volume._check_rebuilt(missing)
            if backup_options.target is not None:
                volume._attach_backup(backup_options)
        except BaseException:
            volume._discard()  # its threads and descriptors go too
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

    def _release_lock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    @classmethod
    def _open_readonly(
        cls, root: Path, clock: Clock | None, backend: str | None, backup: Any
    ) -> Volume:
        if (root / UNFINISHED_MARKER).exists():
            raise VolumeIncompleteError(str(root))
        options, volume_id, stored_backup, base = _read_volume_meta(root)
        if options.durability == "memory":
            raise ConfigurationError(f"{root} keeps no node files (durability 'memory')")
        if backend is not None:
            options.backend = backend
        missing = [name for name in NODE_NAMES if not (root / "nodes" / name).is_dir()]
        volume = cls(
            options,
            root,
            clock,
            nodes=_make_nodes(options, root, volume_id, None),
            volume_id=volume_id,
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

    def _load_readonly(self, missing: list[str]) -> None:
        """Loads every node's files as they are and works out VDL as recovery would,
        from a read quorum, without telling the nodes anything."""
        with self.transport.lock:
            for name in missing:
                self.nodes[name].failed = "its folder is missing"
            for node in self.nodes.values():
                if node.failed:
                    continue
                try:
                    node.load(leave_logs=True, sync_logs=False)
                except (AuroraStorageError, OSError) as error:
                    node.failed = f"cannot load: {error}"
            live = [node for node in self.nodes.values() if not node.failed]
            unavailable = {node.name: node.failed for node in self.nodes.values() if node.failed}
            for node in self.nodes.values():
                self.transport.set_down(node.name, bool(node.failed))
            if len(live) < READ_QUORUM:
                raise RecoveryError(
                    f"{len(live)} of 6 nodes can be read; {READ_QUORUM} needed; unusable: "
                    + "; ".join(f"{name}: {why}" for name, why in sorted(unavailable.items()))
                )
            states = [node.recovery_state() for node in live]
            histories = self._histories_of(states)
            keyed = [history.key[0] for history in histories if history.key != NO_KEY]
            self.epoch = max(node.epoch for node in live)
            plan = recovery.plan(
                self.epoch + 1,
                states,
                self.options.lal,
                unavailable=unavailable,
                opened_epoch=max(keyed) if keyed else None,
            )
            self.recovery = plan
            # Kept in memory only: reads skip what a recovery would annul.
            self.truncations = list(plan.truncations)
            decided = newest(histories)
            if decided is not None:
                self.history = decided
                if decided.backtrack_window is not None:
                    self.options.backtrack_window = decided.backtrack_window
            self._refresh_annulled()
            self.allocated_lsn = self._vcl = self._vdl = plan.vdl
            for pg_id in plan.pg_ids:
                pg = self.pgs[pg_id] = ProtectionGroup(pg_id, self.quorum)
                for node in live:
                    segment = node.segments.get(pg_id)
                    if segment is None or segment.suspect:
                        continue
                    pg.scls[node.name] = segment.scl
                    index = bisect.bisect_right(segment.chain_last_lsns, plan.vdl)
                    if index:
                        tail = segment.chain_last_lsns[index - 1]
                    else:
                        tail = segment.chain_base_lsn if segment.chain_base_lsn <= plan.vdl else 0
                    pg.tail_lsn = max(pg.tail_lsn, tail)
                pg.pgcl = min(pg.tail_lsn, pg.quorum.write_point(pg.scls))
            now = self.clock.now()
            self._window_floor_time = max(
                self.history.created_at, now - self.options.backtrack_window
            )
            self._window_floor_lsn = self._vdl
            if self.options.backtrack_window:
                self._window_floor_lsn = self._readonly_window_floor(live)
                self._rebuild_window(
                    [node.window_answer(0, self._window_floor_time) for node in live]
                )
            self._last_commit_time = max(self._last_commit_time, now)

    def _readonly_window_floor(self, live: list[StorageNode]) -> int:
        """The last commit before the window, as nodes index it (no message sent)."""
        best = 0
        version = self.history.at(self._window_floor_time)
        hidden = version.annulled if version is not None else ()
        annulled = merge_ranges(hidden, truncation_ranges(self.truncations))
        for node in live:
            for segment in node.segments.values():
                found, _ = segment.last_commit_at(self._window_floor_time, annulled)
                best = max(best, found)
        return best

    def refresh(self) -> None:
        """A read-only volume reads the nodes' files again: it then shows what is durable
        now (a writer may have committed meanwhile)."""
        self._check_open()
        if not self.readonly:
            raise InvalidArgumentError("refresh is for a read-only volume; a writer is current")
        assert self.path is not None
        again = Volume._open_readonly(
            Path(self.path), self.clock, self.options.backend, self._readonly_backup
        )
        old = self.__dict__.copy()
        self.__dict__.update(again.__dict__)
        self.cluster = Cluster(self)
        stale = object.__new__(Volume)
        stale.__dict__.update(old)
        stale._discard()

    def _readonly_catalog(self) -> backup_module.BackupCatalog:
        """The backup store's catalog, read (never written) for a read-only volume."""
        target = self._readonly_backup
        if target is None:
            raise ConfigurationError("the volume has no backup store (create it with backup=...)")
        return backup_module.BackupCatalog(open_store(target, create=False))

    def _refuse_if_readonly(self, what: str) -> None:
        if self.readonly:
            raise VolumeReadOnlyError(what)

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

            def working() -> int:  # a node whose disk fails meanwhile stops, and is not waited for
                return sum(not self.nodes[name].failed for name in live)

            self.transport.run_until(
                lambda: len(self._recovery_states) >= working(), self.options.commit_timeout
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
            histories = self._histories_of(states)
            # A writer opens once its history is on a write quorum (_decide_history):
            # the highest key's epoch is the last writer known to have opened.
            keyed = [history.key[0] for history in histories if history.key != NO_KEY]
            plan = recovery.plan(
                epoch,
                states,
                self.options.lal,
                unavailable=unavailable,
                opened_epoch=max(keyed) if keyed else None,  # nodes of 0.1.0 keyed nothing
            )
            lo, hi = plan.truncation
            self.pgs = {pg_id: ProtectionGroup(pg_id, self.quorum) for pg_id in plan.pg_ids}
            for name in live:
                self.transport.send(self.writer_name, name, m.Truncate(epoch, lo, hi))
            self.transport.run_until(
                lambda: len(self._truncated) >= working(), self.options.commit_timeout
            )
            truncated = len(self._truncated)
            # Segments report their rewound SCLs once synced: each PG's tail is the
            # highest, since a responder holds the PG's whole chain up to VDL.
            self.transport.wait_for_syncs()
            self.truncations = list(plan.truncations)
            decided = self._choose_history(histories)
            # A write quorum must hold the truncation and the history before any LSN is
            # allocated, so that every later read quorum (the next recovery's) sees
            # them. With fewer, a read quorum still says what is durable: the volume
            # opens degraded, serving reads and allocating nothing, until four nodes
            # take them (_complete_recovery).
            if truncated < WRITE_QUORUM:
                self._degraded = f"the truncation reached {truncated} nodes"
            else:
                acks = self._write_history(decided)
                if acks < WRITE_QUORUM:
                    self._degraded = f"the recovered history reached {acks} nodes"
            self.history = decided
            if self._degraded:
                self._degraded += f"; {WRITE_QUORUM} needed{_failed_nodes(self.nodes)}"
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
                self._rebuild_window(self._ask_window(self._window_floor_time))
            else:
                self._window_floor_lsn = self._vdl
            self._last_commit_time = max(self._last_commit_time, self.clock.now())
            return plan

    @staticmethod
    def _histories_of(states: list[m.RecoveryState]) -> list[History]:
        histories = []
        for state in states:
            try:
                history = decode_history(state.history) if state.history else None
            except CorruptionError:
                history = None  # a node that cannot say votes for no history
            if history is not None:
                histories.append(history)
        return histories

    def _choose_history(self, histories: list[History]) -> History:
        """The newest history a read quorum holds, keyed under this epoch: recovery writes
        it back on a write quorum (history.py), so no later recovery decides otherwise.

        The backtrack window recorded in the nodes' history at creation outranks
        ``volume.meta``, a single file.
        """
        decided = newest(histories) or self.history
        if decided.backtrack_window is None:
            decided.backtrack_window = self.options.backtrack_window  # an older volume: record it
        elif decided.backtrack_window != self.options.backtrack_window:
            self.options.backtrack_window = decided.backtrack_window
        return decided.keyed((self.epoch, 1))

    def _complete_recovery(self) -> None:
        """A volume that opened degraded puts its truncation and history on a write quorum
        now, or raises DegradedVolumeError, changing nothing."""
        assert self.recovery is not None
        lo, hi = self.recovery.truncation
        self._truncated.clear()
        live = [name for name, node in self.nodes.items() if not node.failed]
        for name in live:
            self.transport.send(self.writer_name, name, m.Truncate(self.epoch, lo, hi))
        self.transport.run_until(
            lambda: len(self._truncated) >= WRITE_QUORUM, self.options.commit_timeout
        )
        if len(self._truncated) >= WRITE_QUORUM:
            history = self.history.keyed(self._next_history_key())
            if self._write_history(history) >= WRITE_QUORUM:
                self.history = history
                self._degraded = ""
                return
        raise DegradedVolumeError(self._degraded)

    def _next_history_key(self) -> tuple[int, int]:
        """A key above every history this writer sent (history.py)."""
        epoch, sequence = max(self.history.key, self._history_write_key)
        return (self.epoch, sequence + 1) if epoch == self.epoch else (self.epoch, 1)

    def _write_history(self, history: History) -> int:
        """Sends the whole history to every node; returns how many hold it durably
        (waiting until a write quorum does, or the commit timeout)."""
        self._history_acks = set()
        self._history_write_key = history.key
        message = m.SetHistory(self.epoch, encode_history(history))
        for name in self.nodes:
            self.transport.send(self.writer_name, name, message)
        self.transport.run_until(
            lambda: len(self._history_acks) >= WRITE_QUORUM, self.options.commit_timeout
        )
        return len(self._history_acks)

    def _abandon_history(self) -> bool:
        """After a backtrack failed: writes the history this session keeps under a new
        key, so no recovery can adopt the failed one; True once a write quorum holds it."""
        history = self.history.keyed(self._next_history_key())
        if self._write_history(history) < WRITE_QUORUM:
            return False
        self.history = history
        self._history_in_doubt = None
        return True

    def _resolve_doubts(self) -> None:
        """Raises InDoubtError, changing nothing, while an earlier commit or backtrack is
        in doubt; first tries to resolve them (retransmission, the history rewrite)."""
        if self._in_doubt:
            target = max(self._in_doubt)
            if self._vdl < target:
                self._retransmit()  # frames sent earlier (held ones are not among them)
                if self._held_frames and not self.transport.flush_in_flight():
                    self._send_held_frames()
                self.transport.run_until(lambda: self._vdl >= target, self.options.commit_timeout)
            self._in_doubt = [lsn for lsn in self._in_doubt if lsn > self._vdl]
        if self._history_in_doubt is not None:
            self._abandon_history()
        if self._in_doubt or self._history_in_doubt is not None:
            raise InDoubtError(tuple(self._in_doubt), self._history_in_doubt)

    @property
    def in_doubt(self) -> tuple[int, ...]:
        """CPLs of commits that raised WriteQuorumError and are not yet durable.

        While any is in doubt (or :attr:`backtrack_in_doubt` is set), commits and
        backtracks raise InDoubtError and change nothing.
        """
        with self.transport.lock:
            self._check_open()
            self._in_doubt = [lsn for lsn in self._in_doubt if lsn > self._vdl]
            return tuple(self._in_doubt)

    @property
    def backtrack_in_doubt(self) -> float | None:
        """The target time of a backtrack that raised and may still be found by a
        recovery (its history reached some nodes), or None."""
        self._check_open()
        return self._history_in_doubt

    def wait_durable(self, lsn: int, timeout: Duration | None = None) -> bool:
        """Waits until the commit ending at ``lsn`` is durable (VDL >= ``lsn``).

        Returns True once it is, False if ``timeout`` seconds (default: the
        commit timeout) pass first: it is still in doubt. Raises
        :class:`CommitAnnulledError` if crash recovery annulled it (it will never
        be durable).
        """
        if type(lsn) is not int or lsn < 0:
            raise InvalidArgumentError(f"an LSN is an int >= 0, not {lsn!r}")
        seconds = (
            self.options.commit_timeout if timeout is None else to_duration(timeout, "timeout")
        )
        if not seconds >= 0:
            raise InvalidArgumentError(f"timeout is a duration >= 0, not {timeout!r}")
        with self.transport.lock:
            self._check_open()
            if lsn > self.allocated_lsn:
                raise InvalidArgumentError(
                    f"LSN {lsn} was never allocated (the highest is {self.allocated_lsn})"
                )
            for _, lo, hi in self.truncations:
                if lo < lsn <= hi:
                    raise CommitAnnulledError(lsn, lo, hi)
            if self._vdl < lsn:
                self._retransmit()
                if self._held_frames and not self.transport.flush_in_flight():
                    self._send_held_frames()
                self.transport.run_until(lambda: self._vdl >= lsn, seconds)
            self._in_doubt = [cpl for cpl in self._in_doubt if cpl > self._vdl]
            return self._vdl >= lsn

    def _ask_window(self, since: float) -> list[m.WindowAnswer]:
        """The live nodes' window answers (WindowQuery), as many as answer in time."""
        request_id = next(self._request_ids)
        answers: dict[str, m.WindowAnswer] = {}
        self._window_answers[request_id] = answers
        live = [name for name, node in self.nodes.items() if not node.failed]
        try:
            for name in live:
                self.transport.send(self.writer_name, name, m.WindowQuery(request_id, since))
            self.transport.run_until(lambda: len(answers) == len(live), READ_TIMEOUT)
        finally:
            del self._window_answers[request_id]
        return list(answers.values())

    def _rebuild_window(self, answers: list[m.WindowAnswer]) -> None:
        """The backtrack window's commits and bytes after an open, from storage.

        The commits (CPL, time) are every commit a trusted node's segments index
        in the window; the bytes, what each PG's page log holds above its
        coalesced point (the most any trusted node holds), shared among the
        commits by the LSNs each spans: the sizes a writer noted at commit are
        not stored, so the budget after a reopen works on this estimate.
        """
        trusted = [answer for answer in answers if answer.trusted]
        if not trusted:
            return
        times: dict[int, float] = {}
        pg_bytes: dict[int, int] = {}
        for answer in trusted:
            for cpl, moment in zip(answer.cpls, answer.times, strict=True):
                if cpl > self._window_floor_lsn and not inside(cpl, self.annulled):
                    times[cpl] = moment
            for i in range(0, len(answer.record_bytes), 2):
                pg_id, size = answer.record_bytes[i], answer.record_bytes[i + 1]
                pg_bytes[pg_id] = max(pg_bytes.get(pg_id, 0), size)
        cpls = sorted(times)
        if not cpls:
            return
        total = sum(pg_bytes.values())
        span = cpls[-1] - self._window_floor_lsn
        previous = self._window_floor_lsn
        self._window_commits.clear()
        self._window_bytes = 0
        for cpl in cpls:
            self._note_commit(times[cpl], cpl, total * (cpl - previous) // span)
            previous = cpl

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
            if pending is None:
                self.read_ranking.late_answer(
                    message.request_id, message.node, self.transport.now()
                )
            else:
                pending.answered[message.node] = self.transport.now()
                if message.problem:
                    pending.problems.append(f"{message.node}: {message.problem}")
                elif pending.image is None:
                    pending.image = message.image
        elif isinstance(message, m.Rejected):
            # A node at an epoch no higher than this writer's rejected a request of an
            # earlier writer (a reply still on its way): it says nothing of this one.
            if message.epoch > self.epoch:
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
        elif isinstance(message, m.WindowAnswer):
            window_answers = self._window_answers.get(message.request_id)
            if window_answers is not None:
                window_answers[message.node] = message
        elif isinstance(message, m.Staged):
            if message.request_id in self._staged:
                self._staged[message.request_id] = message
        elif isinstance(message, m.HistorySet):
            if (
                message.epoch == self.epoch
                and (message.key_epoch, message.key_sequence) == self._history_write_key
            ):
                self._history_acks.add(message.node)
        elif isinstance(message, m.HistoryPull):
            return [(sender, m.SetHistory(self.epoch, encode_history(self.history)))]
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
        self._refuse_if_readonly("a transaction")
        return Transaction(self)

    def _commit(self, batches: dict[int, bytearray], record_count: int) -> int:
        # The transport's lock serializes LSN allocation and every change of
        # protocol state; waiting for acks releases it, so other threads' frames
        # join the same fsyncs (group commit).
        with self.transport.lock:
            cpl = self._commit_locked(batches, record_count)
        if self._stager is not None:
            # Outside the lock: a staging round never holds up other commits.
            self._stager.after_commit(self._last_commit_time)
        return cpl

    def _commit_locked(self, batches: dict[int, bytearray], record_count: int) -> int:
        self._check_open()
        self._raise_if_fenced()
        if self._degraded:
            self._complete_recovery()
        if self._in_doubt or self._history_in_doubt is not None:
            self._resolve_doubts()
        wanted = self.allocated_lsn + record_count
        limit = self.options.lal
        if wanted > self._lal_base() + limit and not self.transport.run_until(
            lambda: wanted <= self._lal_base() + limit, self.options.commit_timeout
        ):
            raise LsnLimitError(wanted, self._vdl, limit)
        if self._flusher is not None:
            self._flusher.prime()  # its thread wakes while the nodes take the frames
        time = max(self.clock.now(), self._last_commit_time)
        if time <= self.staging.commit_time_floor:  # a round was recorded at this time
            time = math.nextafter(self.staging.commit_time_floor, math.inf)
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
        vdl = self._vdl
        for pg_id, first, last, frame in built:
            pg = self.pgs.get(pg_id)
            if pg is None:
                pg = self.pgs[pg_id] = ProtectionGroup(pg_id, self.quorum)
            pg.note_frame(last, vdl)
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
            self._in_doubt.append(cpl)
            raise WriteQuorumError(cpl, self._vdl, self._quorum_detail(sends))
        return cpl

    def _send_frames(self, sends: list[tuple[ProtectionGroup, bytes]]) -> None:
        """Sends frames (in LSN order) to their PGs' segments, one message per PG."""
        retain = self.min_read_point()
        truncations = flatten_truncations(self.truncations)
        key_epoch, history_sequence = self.history.key
        if key_epoch != self.epoch:
            history_sequence = -1  # not keyed under this epoch (never after recovery)
        by_pg: dict[int, tuple[ProtectionGroup, list[bytes]]] = {}
        for pg, frame in sends:
            by_pg.setdefault(pg.pg_id, (pg, []))[1].append(frame)
        for pg, frames in by_pg.values():
            pg_retain = retain
            if self.backup_store is not None:  # the backup's page images are taken at staged LSNs
                pg_retain = min(retain, self.staging.staged_lsn.get(pg.pg_id, 0))
            message = m.WriteFrames(
                self.epoch,
                pg.pg_id,
                tuple(frames),
                pg_retain,
                self._gc_floor(pg),
                truncations,
                history_sequence,
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

    # --- continuous backup (staging.py, backup.py) ------------------------------------

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
        return self._stager.stage_now(seconds)

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
        return self.staging.window(self.history.created_at)

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
    ) -> Volume:
        """Point-in-time restore: a new volume with exactly the commits at or before ``to``.

        Reads only the backup store (a folder, a URL, or a store object); the
        source volume may be gone. ``to`` is a time (clock.py), or
        ``"earliest"`` or ``"latest"`` of the restorable window. The keywords
        are :meth:`create`'s (the geometry comes from the backup);
        ``backup_to`` is the new volume's own continuous backup (``create``'s
        ``backup``), which begins with its pages at the restore point. Raises
        TimeOutsideWindowError outside the restorable window,
        BackupCorruptError or BackupObjectMissingError naming a damaged or
        missing object, RestoreError for a gap; a failed restore removes what it
        made under ``path``.
        """
        if progress is not None and not callable(progress):
            raise InvalidArgumentError(f"progress is a function of (done, total), not {progress!r}")
        if path is not None:
            checks.path(path)
        return backup_module.restore(
            backup,
            to,
            path,
            progress=progress,
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
        )

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
        self._check_open()
        if not self.options.backtrack_window:
            raise BacktrackDisabledError()
        with self.transport.lock:
            self._window_floor()
            return self._window_floor_time, max(self.clock.now(), self._last_commit_time)

    def _last_commit_at(
        self, moment: float, annulled: tuple[int, ...] | None = None
    ) -> tuple[int, float]:
        """(CPL, time) of the last visible commit at or before ``moment``, asking the nodes."""
        cpl, cpl_time, _, _ = self._ask_time_index(moment, annulled)
        return cpl, cpl_time

    def _ask_time_index(
        self, moment: float, annulled: tuple[int, ...] | None = None
    ) -> tuple[int, float, float, int]:
        """(CPL, time, floor time, folded LSN): the last visible commit at or before
        ``moment``, the earliest moment the answering nodes' time indexes serve, and
        the highest LSN their segments folded into page images.

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
        floor_time = max(answer.floor_time for answer in trusted)
        folded_lsn = max(answer.folded_lsn for answer in trusted)
        return best.cpl, best.time, floor_time, folded_lsn

    def backtrack(self, to: Moment) -> BacktrackResult:
        """Rewinds the live volume to its last commit at or before ``to``, in place.

        Non-destructive: the undone commits stay until they leave the window, so
        a later backtrack may move forward again to any time in the window.
        Writes afterwards get LSNs above everything ever allocated. Raises
        :class:`BacktrackDisabledError`, :class:`TimeOutsideWindowError` (also
        when the nodes' history cannot serve the time), :class:`InDoubtError`
        while an earlier commit or backtrack is in doubt, or
        :class:`BacktrackQuorumError` when the new history does not reach a write
        quorum; on any error the visible state does not change. ``to`` is any time
        clock.py reads (``-2h`` and ``now`` on the volume's clock), or ``"earliest"``
        or ``"latest"``: the ends of :attr:`backtrack_window` as the backtrack runs.
        """
        self._check_open()
        self._refuse_if_readonly("a backtrack")
        parse_target(to)  # a time that cannot be read raises before anything runs
        with self.transport.lock:
            self._check_open()
            if not self.options.backtrack_window:
                raise BacktrackDisabledError()
            if self._degraded:
                self._complete_recovery()
            self._resolve_doubts()
            earliest, latest = self.backtrack_window
            target = resolve_target(to, earliest, latest, self.clock.now())
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
            cpl, cpl_time, floor_time, folded_lsn = self._ask_time_index(target)
            if target < floor_time or cpl < folded_lsn:
                # The window this writer believes in is wider than what storage kept
                # (the nodes dropped or folded that history): refuse, never land wrong.
                raise TimeOutsideWindowError(
                    target,
                    max(earliest, floor_time),
                    latest,
                    f"storage keeps no history that far back (commits before "
                    f"{format_time(floor_time)} dropped, LSNs up to {folded_lsn} folded into pages)",
                )
            hidden = version.annulled
            if cpl < self.allocated_lsn:
                hidden = merge_ranges(hidden, (cpl, self.allocated_lsn))
            now = max(self.clock.now(), self._last_commit_time)
            new = HistoryVersion(self.history.current.version + 1, now, hidden, "backtrack")
            candidate = self.history.with_version(new, self._next_history_key())
            reached = self._write_history(candidate)
            if reached < WRITE_QUORUM:
                self._raise_if_fenced()
                # Some nodes may hold the candidate: rewrite the history this session
                # keeps above it at once, or stay in doubt until that succeeds.
                self._history_in_doubt = target
                resolved = self._abandon_history()
                raise BacktrackQuorumError(
                    target, self._vdl, reached, not resolved, _failed_nodes(self.nodes)
                )
            self.history = candidate
            self._last_commit_time = now
            self._refresh_annulled()
            return BacktrackResult(target, cpl, cpl_time, new.version)

    def _page_number(self, page_no: Any) -> int:
        """``page_no`` as a page of this volume (any integer type but bool)."""
        count = self.geometry.page_count
        try:
            number = checks.integer("page_no", page_no, InvalidArgumentError)
        except InvalidArgumentError:
            raise PageOutOfRangeError(page_no, count) from None
        if not 0 <= number < count:
            raise PageOutOfRangeError(page_no, count)
        return number

    def _read_point(self, lsn: Any) -> int:
        """``lsn`` as a read point: an int from 0 to VDL."""
        try:
            read_point = checks.integer("lsn", lsn, InvalidArgumentError)
        except InvalidArgumentError:
            raise LsnOutOfRangeError(lsn, self._vdl) from None
        if not 0 <= read_point <= self._vdl:
            raise LsnOutOfRangeError(lsn, self._vdl)
        return read_point

    @contextmanager
    def read_view(self, lsn: int | None = None) -> Iterator[int]:
        """Pins a read point (default VDL) so segments keep its versions while the block runs."""
        with self.transport.lock:
            self._check_open()
            read_point = self._vdl if lsn is None else self._read_point(lsn)
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
        detail = "; ".join(parts) or f"an earlier commit in PG {blocked} still lacks a write quorum"
        return detail + _failed_nodes(self.nodes)

    def _retransmissions(self) -> list[tuple[str, m.Message]]:
        """Frames without a write quorum, addressed to the segments that lack them."""
        out: list[tuple[str, m.Message]] = []
        # Held frames go out with the next flush's leader, in order (_send_held_frames).
        held = {id(frame) for _, frame in self._held_frames}
        for pg in self.pgs.values():
            for outstanding in pg.outstanding:
                if held and id(outstanding.frame) in held:
                    continue
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
        if type(page_no) is not int or not 0 <= page_no < self.geometry.page_count:
            page_no = self._page_number(page_no)
        read_point = self._vdl if lsn is None else self._read_point(lsn)
        pg = self.pgs.get(self.geometry.pg_of(page_no))
        if pg is None or read_point == 0:
            return bytes(self.geometry.page_size)
        required = pg.required_scl(read_point, self._vdl)
        candidates = pg.readable_nodes(required)
        if not candidates:
            raise ReadUnavailableError(page_no, read_point, "no segment has acknowledged it")
        if self._direct:
            return self._read_direct(pg.pg_id, page_no, read_point, required, candidates)
        ranking = self.read_ranking
        candidates = ranking.order(candidates, self.transport.now())
        request_id = next(self._request_ids)
        request = m.ReadPage(request_id, pg.pg_id, page_no, read_point, required, self.annulled)
        pending = self._reads[request_id] = _PendingRead(page_no)
        asked: dict[str, float] = {}  # node: transport time it was asked
        try:
            for node in candidates:
                asked[node] = self.transport.now()
                self.transport.send(self.writer_name, node, request)
                answered = functools.partial(_answered_by, pending, node)
                if self.transport.run_until(answered, READ_HEDGE_DELAY) and pending.image:
                    return pending.image
            # Every candidate was asked; wait a while longer for a late answer.
            self.transport.run_until(
                lambda: pending.image is not None or len(pending.answered) == len(asked),
                READ_TIMEOUT,
            )
            if pending.image is not None:
                return pending.image
        finally:
            del self._reads[request_id]
            now = self.transport.now()
            for node, started in asked.items():
                answered_at = pending.answered.get(node)
                if answered_at is not None:
                    ranking.answered(node, answered_at - started)
                elif now - started >= READ_HEDGE_DELAY:
                    ranking.silent(node, now)  # it had its time; another served, or none
            # An answer still on its way clears the silence and gives its latency.
            ranking.finished(
                request_id, {n: t for n, t in asked.items() if n not in pending.answered}
            )
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

    # --- status and lifecycle -------------------------------------------------------

    def status(self) -> VolumeStatus:
        """Nodes, AZs, health, SCLs, PG count, bytes, and the history windows, as plain
        data (typed: status.py)."""
        with self.transport.lock:
            self._check_open()
            nodes: list[NodeStatus] = []
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
            pgs: list[PgStatus] = [
                {
                    "pg": pg.pg_id,
                    "pgcl": pg.pgcl,
                    "tail_lsn": pg.tail_lsn,
                    "scls": {node: pg.scls.get(node, 0) for node in pg.quorum.members},
                    "unacknowledged_frames": len(pg.outstanding),
                }
                for pg in sorted(self.pgs.values(), key=lambda pg: pg.pg_id)
            ]
            result: VolumeStatus = {
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
                "in_doubt": [lsn for lsn in self._in_doubt if lsn > self._vdl],
                "degraded": self._degraded,
                "readonly": self.readonly,
                "backtrack_in_doubt": self._history_in_doubt,
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
            if self.readonly and self._readonly_backup is not None:
                result["backup"] = self._readonly_backup_status()
            if self.backup_store is not None:
                window: tuple[float | None, float | None] = (None, None)  # no round yet
                if self.staging.last_round_name:
                    window = self.restorable_window
                result["backup"] = {
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
            return result

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

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` (or :meth:`simulate_crash`) ran."""
        return self._closed

    def __repr__(self) -> str:
        where = repr(self.path) if self.path is not None else "in memory"
        state = "closed" if self._closed else "open"
        return (
            f"<Volume {where} {state}: epoch {self.epoch}, VDL {self._vdl}, "
            f"{len(self.pgs)} PGs, durability {self.options.durability}>"
        )
