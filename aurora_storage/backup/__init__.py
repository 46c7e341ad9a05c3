"""Continuous backup (step 6 of the write path) and point-in-time restore.

Storage stages each protection group's log to a backup store once per PG,
not six times: for each staging round the writer names one healthy segment
per PG, and that node builds the PG's chain frames of the round into a LOG
object, or every page of the PG into a PAGES object (protocol/stage.py),
which the runtime uploads outside any lock (the rounds themselves are run by
backup/staging.py). The writer keeps two kinds of small objects: ``rounds/``
manifests (each round's VDL, the CPLs it staged with their times: the time
index of the backup, and the objects it staged) and ``volume/history``
(geometry, history versions, truncations, the earliest restorable time).
Objects and their names are coded in format/objects.py (docs/format.md,
"Backup objects"); this module holds the writer's staging state
(:class:`StagingState`), the catalog a restore reads (:class:`BackupCatalog`)
and the restore's reading side.

Restore to time T reads only the store (:func:`read_restore_point`): the
version in effect at T and every truncation give the hidden LSN ranges; the
last CPL at or before T outside them is the restore point; each PG's newest
PAGES object at or below it and the LOG objects after it (their backlinks
must chain, or the restore names the missing range) are applied in C
(:func:`pg_images`). The volume (volume.py, ``Volume.restore``) installs the
resulting page images into a new volume's segments at the restore point,
shared by the six replicas, not written again through the writer.

Invariants: a time inside the restorable window (:meth:`BackupCatalog.window`)
restores exactly the commits at or before it; a time outside raises
TimeOutsideWindowError; a restore never builds a page from nothing: an
object its plan needs that the store lacks (one a round names, the base of a
PG, a link of a PG's chain) raises an error naming the object or LSN range.
"""

from __future__ import annotations

import mmap
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .. import checks, native
from ..clock import Duration, Moment, parse_target, resolve_target, to_duration
from ..config import Geometry, VolumeOptions
from ..errors import (
    BackupCorruptError,
    BackupObjectMissingError,
    ConfigurationError,
    CorruptionError,
    RestoreError,
    TimeOutsideWindowError,
)
from ..format import frames as log
from ..format.objects import (
    HISTORY_NAME,
    KIND_HISTORY,
    KIND_LOG,
    KIND_MANIFEST,
    KIND_PAGES,
    decode_object,
    encode_object,
    log_name,
    pages_name,
    parse_log_name,
    parse_pages_name,
    parse_round_name,
)
from ..native.pagelog import PageLog, new_page_log
from ..protocol.history import History, inside, merge_ranges, truncation_ranges
from ..protocol.segment import SharedImages
from .store import BackupStore, open_store

STAGING_INTERVAL_DEFAULT = 60.0  # seconds between staging rounds: latest restorable trails by this
SNAPSHOT_EVERY_BYTES = 64 * 1024 * 1024  # staged log bytes of a PG between PAGES objects
# A PG with log staged since its last PAGES object gets one at least this often,
# however little it changed: retention can delete LOG objects only up to a base,
# so this bounds how long the store keeps them past the retention period.
SNAPSHOT_EVERY_SECONDS = 86400.0
DAY = 86400.0


# --- writer side: staging state --------------------------------------------------------


@dataclass
class BackupOptions:
    target: Any = None  # a folder path, a URL, or a BackupStore
    retention_days: float = 1.0
    staging_interval: float = STAGING_INTERVAL_DEFAULT
    staging: str | None = None  # "background", "inline", or None: by the clock (staging.py)

    @classmethod
    def of(
        cls,
        target: Any,
        retention: float | timedelta,
        staging_interval: Duration,
        staging: str | None,
    ) -> BackupOptions:
        """The options as ``Volume.create`` takes them, checked: ``retention`` in days or
        a timedelta, ``staging_interval`` in seconds or a timedelta."""
        days = (
            retention.total_seconds() / DAY
            if isinstance(retention, timedelta)
            else to_duration(retention, "backup_retention_days")
        )
        interval = to_duration(staging_interval, "backup_staging_interval")
        options = cls(target, days, interval, staging)
        options.check()
        return options

    def check(self) -> None:
        self.retention_days = checks.number("backup_retention_days", self.retention_days)
        self.staging_interval = checks.seconds("backup_staging_interval", self.staging_interval)
        if self.staging not in (None, "background", "inline"):
            raise ConfigurationError(
                f"backup_staging {self.staging!r} must be 'background', 'inline' or None"
            )
        if not 1 <= self.retention_days <= 35:
            raise ConfigurationError(
                f"backup_retention_days {self.retention_days} must be from 1 to 35"
            )
        if not self.staging_interval > 0:
            raise ConfigurationError(f"staging interval {self.staging_interval} must be positive")


@dataclass
class StagingState:
    """What the writer knows of its backup: per PG, staged up to where, and a catalog
    of what the store holds (rounds, LOG and PAGES objects), kept in memory so
    that the window, status() and retention need no listing of the store."""

    staged_lsn: dict[int, int] = field(default_factory=dict)
    bytes_since_snapshot: dict[int, int] = field(default_factory=dict)
    snapshot_time: dict[int, float] = field(default_factory=dict)  # each PG's last PAGES object
    last_round_time: float = float("-inf")  # when the last round started (or was asked for)
    last_round_vdl: int = 0
    last_round_time_recorded: float = float("-inf")
    earliest: float = float("-inf")  # restores before this were given up by retention
    # (VDL, time, name) of the rounds in the store, oldest first; a round read back
    # from its name has a time at most a millisecond late, never early.
    rounds: list[tuple[int, float, str]] = field(default_factory=list)
    expired_vdl: int = 0  # retention already applied up to this round's VDL
    last_cpl: tuple[int, float] = (0, 0.0)  # the newest CPL a recorded round names
    # CPLs (with times) and objects staged but named by no recorded round yet: a
    # round that fails after some PGs were staged leaves them to the next round.
    unnamed_cpls: list[tuple[int, float]] = field(default_factory=list)
    unnamed_logs: list[tuple[int, int, int]] = field(default_factory=list)  # (PG, first, last)
    unnamed_pages: list[tuple[int, int]] = field(default_factory=list)  # (PG, LSN)
    last_error: str = ""  # why the last staging round failed; empty after a good one
    # (CPL, time) where the backup begins when the volume has no frames below it
    # to stage (a restored volume's base, or the VDL of a volume given a new
    # backup): the pages there go up first.
    base: tuple[int, float] = (0, 0.0)
    history_written: int = -1  # signature of the history last uploaded
    # The time of the newest round being recorded: a commit stamped after it gets a
    # later time, so a restore to the round's time never misses a commit it does
    # not name (a clock that did not tick between them).
    commit_time_floor: float = float("-inf")
    # The store's LOG and PAGES objects per PG, oldest first, and its newest round.
    logs: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)
    snapshots: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    last_round_name: str = ""
    last_round_meta: dict[str, Any] = field(default_factory=dict)

    def load(self, store: BackupStore, history_meta: dict[str, Any]) -> None:
        """The catalog of a store that holds a backup already: names only, and the
        newest round's manifest (the last CPL it names). A few store calls, at attach."""
        self.earliest = max(self.earliest, float(history_meta.get("earliest", self.earliest)))
        for name in store.list("log/"):
            pg_id, first, last = parse_log_name(name)
            self.logs.setdefault(pg_id, []).append((first, last, name))
        for name in store.list("pages/"):
            pg_id, lsn = parse_pages_name(name)
            self.snapshots.setdefault(pg_id, []).append((lsn, name))
        for entries in self.logs.values():
            entries.sort()
        for snapshots in self.snapshots.values():
            snapshots.sort()
        names = store.list("rounds/")
        self.rounds = sorted(
            (vdl, time + 0.001, name) for name in names for vdl, time in [parse_round_name(name)]
        )
        if not names:
            return
        newest = max(names, key=parse_round_name)
        meta, _ = decode_object(store.get(newest), newest, KIND_MANIFEST)
        self.last_round_name, self.last_round_meta = newest, meta
        self.last_round_vdl = int(meta["vdl"])
        self.last_round_time_recorded = float(meta["time"])
        if meta["cpls"]:
            self.last_cpl = (int(meta["cpls"][-1]), float(meta["times"][-1]))

    def window(self, created_at: float) -> tuple[float, float]:
        """(earliest, latest) restorable times, as the store holds them."""
        if not self.last_round_name:
            raise RestoreError("the backup holds no staged round yet")
        return max(created_at, self.earliest), self.last_round_time_recorded


def history_object(
    volume_id: str,
    options: VolumeOptions,
    history: History,
    truncations: Sequence[tuple[int, ...]],
    staged_earliest: float,
) -> bytes:
    """The ``volume/history`` object: geometry, history versions, truncations and the
    earliest restorable time (never before the volume was made)."""
    meta = {
        "volume_id": volume_id,
        "page_size": options.page_size,
        "segment_size": options.segment_size,
        "capacity": options.capacity,
        "versions": history.encode(),
        "truncations": [list(t) for t in truncations],
        "earliest": max(history.created_at, staged_earliest),
    }
    return encode_object(KIND_HISTORY, b"", meta)


# --- reading a backup ---------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    vdl: int
    time: float
    cpls: tuple[int, ...]
    times: tuple[float, ...]
    # The VDL of the round recorded before it (-1: none), or None in a backup
    # written before rounds recorded it; the objects the round staged.
    previous: int | None = None
    logs: tuple[int, ...] = ()  # flat (PG, first LSN, last LSN) of its LOG objects
    pages: tuple[int, ...] = ()  # flat (PG, LSN) of its PAGES objects


def newest_base(
    snapshots: list[tuple[int, str]], upto: int, hidden: tuple[int, ...]
) -> tuple[int, str | None]:
    """(LSN, name) of the newest of a PG's PAGES objects (ascending) at or below ``upto``
    that no range of ``hidden`` covers, or (0, None). A snapshot at a hidden LSN was
    taken before the backtrack that hid it: its images hold changes a restore must
    not show."""
    for lsn, name in reversed(snapshots):
        if lsn <= upto and not inside(lsn, hidden):
            return lsn, name
    return 0, None


class BackupCatalog:
    """What a backup store holds, read from names and small objects only."""

    def __init__(self, store: BackupStore, read_rounds: bool = True) -> None:
        self.store = store
        # A missing or damaged history raises BackupObjectMissingError or
        # BackupCorruptError, naming the object.
        meta, _ = decode_object(store.get(HISTORY_NAME), HISTORY_NAME, KIND_HISTORY)
        self.meta = meta
        self.history = History.decode(meta["versions"])
        self.truncations = [(int(e), int(lo), int(hi)) for e, lo, hi in meta["truncations"]]
        self.logs: dict[int, list[tuple[int, int, str]]] = {}
        self.snapshots: dict[int, list[tuple[int, str]]] = {}
        self.listed: set[str] = set()
        for name in store.list("log/"):
            pg_id, first, last = parse_log_name(name)
            self.logs.setdefault(pg_id, []).append((first, last, name))
            self.listed.add(name)
        for name in store.list("pages/"):
            pg_id, lsn = parse_pages_name(name)
            self.snapshots.setdefault(pg_id, []).append((lsn, name))
            self.listed.add(name)
        self.rounds: list[Round] = []
        self.round_names = store.list("rounds/")
        for name in self.round_names if read_rounds else ():
            self.rounds.append(_read_round(store, name))
        self.rounds.sort(key=lambda entry: (entry.vdl, entry.time))
        # Objects the rounds name join the listed ones: one a round names that the
        # store lacks is missing, not absent.
        for entry in self.rounds:
            for i in range(0, len(entry.logs), 3):
                pg_id, first, last = entry.logs[i : i + 3]
                self.logs.setdefault(pg_id, []).append((first, last, log_name(pg_id, first, last)))
            for i in range(0, len(entry.pages), 2):
                pg_id, lsn = entry.pages[i : i + 2]
                self.snapshots.setdefault(pg_id, []).append((lsn, pages_name(pg_id, lsn)))
        for pg_id, entries in self.logs.items():
            self.logs[pg_id] = sorted(set(entries))
        for pg_id, snapshots in self.snapshots.items():
            self.snapshots[pg_id] = sorted(set(snapshots))

    def window(self) -> tuple[float, float]:
        """(earliest, latest) restorable times.

        Retention moves the earliest time (the history object's ``earliest``);
        so does a round missing from the chain of rounds (each names the VDL of
        the one recorded before it; a larger VDL than the round before it in
        the store has means one between them is gone): the time index before
        it is incomplete.
        """
        if not self.rounds:
            raise RestoreError("the backup holds no staged round yet")
        latest = max(entry.time for entry in self.rounds)
        earliest = max(
            self.history.created_at, float(self.meta.get("earliest", self.history.created_at))
        )
        previous = -1
        for entry in self.rounds:
            if entry.previous is not None and entry.previous > previous:
                earliest = max(earliest, entry.time)
            previous = entry.vdl
        return earliest, latest

    def base_snapshot(
        self, pg_id: int, upto: int, hidden: tuple[int, ...]
    ) -> tuple[int, str | None]:
        """(LSN, name) of the PG's newest PAGES object in the store at or below ``upto``
        that no range of ``hidden`` covers, or (0, None) (:func:`newest_base`)."""
        held = [entry for entry in self.snapshots.get(pg_id, []) if entry[1] in self.listed]
        return newest_base(held, upto, hidden)

    def plan(self, point: int, annulled: tuple[int, ...]) -> list[RestorePlan]:
        """What a restore to ``point`` reads, per PG: its base snapshot and the LOG
        objects after it, up to the point.

        A PAGES object a round names that the store lacks is passed over for an
        older one, if the LOG objects after that are all there (else the restore
        names the missing PAGES object); a missing LOG object a round names
        raises BackupObjectMissingError naming it.
        """
        plans = []
        for pg_id in sorted(set(self.logs) | set(self.snapshots)):
            base_lsn, base_name = self.base_snapshot(pg_id, point, annulled)
            wanted_lsn, wanted = newest_base(self.snapshots.get(pg_id, []), point, annulled)
            missing_base = wanted if wanted is not None and wanted not in self.listed else None
            logs = [
                entry
                for entry in self.logs.get(pg_id, [])
                if entry[1] > base_lsn and entry[0] <= point
            ]
            for _, last, name in logs:
                if name not in self.listed:
                    if missing_base is not None and last <= wanted_lsn:
                        name = missing_base  # only the older base needs this one
                    raise BackupObjectMissingError(
                        name, repr(self.store), f"a restore of PG {pg_id} to LSN {point} needs it"
                    )
            plans.append(RestorePlan(pg_id, base_lsn, base_name, logs, missing_base))
        return plans

    def restore_point(self, moment: float) -> tuple[int, tuple[int, ...]]:
        """The CPL a restore to ``moment`` lands on, and the LSN ranges it must hide."""
        earliest, latest = self.window()
        if not earliest <= moment <= latest:
            raise TimeOutsideWindowError(moment, earliest, latest)
        version = self.history.at(moment)
        hidden = version.annulled if version is not None else ()
        annulled = merge_ranges(hidden, truncation_ranges(self.truncations))
        best = 0
        for entry in self.rounds:
            for cpl, time in zip(entry.cpls, entry.times, strict=True):
                if time <= moment and cpl > best and not inside(cpl, annulled):
                    best = cpl
        # Where a backtrack in effect at the moment landed is a CPL committed before
        # it: the point when every CPL the kept rounds name after it is hidden (the
        # round naming it may have expired with retention).
        for i in range(0, len(hidden), 2):
            if hidden[i] > best and not inside(hidden[i], annulled):
                best = hidden[i]
        return best, annulled


def _read_round(store: BackupStore, name: str) -> Round:
    meta, _ = decode_object(store.get(name), name, KIND_MANIFEST)
    try:
        previous = meta.get("previous")
        return Round(
            int(meta["vdl"]),
            float(meta["time"]),
            tuple(int(v) for v in meta["cpls"]),
            tuple(float(v) for v in meta["times"]),
            None if previous is None else int(previous),
            tuple(int(v) for v in meta.get("logs", ())),
            tuple(int(v) for v in meta.get("pages", ())),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise BackupCorruptError(name, f"bad round manifest ({error!r})") from None


Progress = Callable[[int, int], None]


@dataclass
class RestorePlan:
    """What a restore reads for one PG: its base snapshot (LSN 0 and no name: none)
    and the LOG objects after it, oldest first (BackupCatalog.plan)."""

    pg_id: int
    base_lsn: int
    base_name: str | None
    logs: list[tuple[int, int, str]]
    # A newer PAGES object a round names that the store lacks: the restore starts
    # from an older base instead, and names this one if that fails.
    missing_base: str | None = None

    @property
    def names(self) -> list[str]:
        """The objects it reads, in order."""
        return [*([self.base_name] if self.base_name else []), *(n for _, _, n in self.logs)]


@dataclass(frozen=True)
class RestoreSource:
    """What a restore reads from a backup store before it makes a volume."""

    store: BackupStore
    moment: float  # the time asked for, inside the window
    point: int  # the restore point: the last CPL at or before ``moment`` outside hidden ranges
    annulled: tuple[int, ...]  # hidden LSN ranges as flat (first, last) pairs
    meta: dict[str, Any]  # the history object's meta: the geometry of the backed-up volume
    plans: list[RestorePlan]  # one per PG with staged objects

    @property
    def objects(self) -> int:
        """Objects the restore reads: the total its progress counts to."""
        return sum(len(plan.names) for plan in self.plans)


def read_restore_point(source: Any, to: Moment, now: float | None) -> RestoreSource:
    """Where a restore of the backup ``source`` to ``to`` lands, read from the store only.

    ``to`` is any time clock.py reads (``now`` and ``-2h`` relative to ``now``,
    the caller's clock), or ``"earliest"`` or ``"latest"``: the ends of the
    restorable window. The source is only read: a local folder that does not
    exist is an error, never created. Raises TimeOutsideWindowError outside the
    window; BackupCorruptError or BackupObjectMissingError for the catalog.
    """
    parse_target(to)  # a time that cannot be read raises before the store is read
    store = open_store(source, create=False)
    catalog = BackupCatalog(store)
    earliest, latest = catalog.window()
    moment = resolve_target(to, earliest, latest, now)
    point, annulled = catalog.restore_point(moment)
    return RestoreSource(
        store, moment, point, annulled, catalog.meta, catalog.plan(point, annulled)
    )


def restore_pages(
    source: RestoreSource, geometry: Geometry, backend: str | None, progress: Progress | None
) -> dict[int, list[SharedImages]]:
    """Every PG's pages at the restore point (:func:`pg_images`), by PG; ``progress``
    is told (objects read, objects to read) after each object."""
    total, done = source.objects, 0

    def read_one() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    pages: dict[int, list[SharedImages]] = {}
    for plan in source.plans:
        layers = pg_images(source, plan, geometry, backend, read_one)
        if layers:
            pages[plan.pg_id] = layers
    return pages


def pg_images(
    source: RestoreSource,
    plan: RestorePlan,
    geometry: Geometry,
    backend: str | None,
    read_one: Callable[[], None],
) -> list[SharedImages]:
    """One PG's pages at ``point``, as layers of shared images (Segment.start_at).

    The snapshot's images are used as they are, without a copy: its payload
    becomes a shared block. A scratch page log borrows them too, takes the LOG
    objects' records, and materializes, in one C call, every page a record
    touched into a second block, which comes first: it holds the newer images.
    Raises BackupCorruptError naming a damaged object, RestoreError for a gap
    (or for LOG objects that begin past the PG's first frame with no base).
    """
    scratch = new_page_log(geometry.page_size, backend)
    try:
        snapshot = _share_base(source.store, plan, geometry, scratch)
        if snapshot is not None:
            read_one()
        _apply_logs(source, plan, geometry, scratch, read_one)
        changed = _changed_images(scratch, source.point, source.annulled, geometry.page_size)
        return [layer for layer in (changed, snapshot) if layer is not None]
    finally:
        scratch.close()


def _share_base(
    store: BackupStore, plan: RestorePlan, geometry: Geometry, scratch: PageLog
) -> SharedImages | None:
    """The images of the plan's base snapshot, lent to ``scratch`` at the base's LSN;
    None when the plan has no base."""
    if plan.base_name is None:
        return None
    page_lo, page_hi = geometry.page_range(plan.pg_id)
    snapshot = _snapshot_images(store, plan.base_name, geometry.page_size, page_lo, page_hi)
    scratch.share_images(snapshot.page_nos, snapshot.block, plan.base_lsn)
    return snapshot


def _apply_logs(
    source: RestoreSource,
    plan: RestorePlan,
    geometry: Geometry,
    scratch: PageLog,
    read_one: Callable[[], None],
) -> None:
    """Append to ``scratch`` the records of the plan's LOG objects, oldest first, that
    lie above the base and at or below the restore point; each object must continue
    the chain of those before it (:func:`_check_backlink`)."""
    page_lo, page_hi = geometry.page_range(plan.pg_id)
    chain = plan.base_lsn  # the PG's frames are all applied up to here
    for first, last, name in plan.logs:
        if last <= chain:  # covered already: a failed round's object, staged again
            read_one()
            continue
        object_meta, frames = decode_object(source.store.get(name), name, KIND_LOG)
        _check_backlink(source, plan, chain, first, name, int(object_meta["backlink"]))
        position = 0
        while position < len(frames):
            try:
                frame = log.decode_frame(frames, geometry.page_size, page_lo, page_hi, position)
            except CorruptionError as error:
                raise BackupCorruptError(name, str(error)) from None
            if frame.pg_id != plan.pg_id:
                raise BackupCorruptError(name, f"holds a frame of PG {frame.pg_id}")
            # Frames never straddle a staged LSN (the snapshot's) or a CPL (the point).
            if chain < frame.last_lsn and frame.first_lsn <= source.point:
                scratch.append(frame.body)
            position += frame.size
        chain = max(chain, last)
        read_one()


def _check_backlink(
    source: RestoreSource, plan: RestorePlan, chain: int, first: int, name: str, backlink: int
) -> None:
    """Raise unless the LOG object ``name`` (from LSN ``first``, continuing from LSN
    ``backlink``) continues the PG's frames applied up to ``chain``: naming the newer
    base the plan passed over if it has one, else the gap (RestoreError)."""
    if backlink <= chain:
        return
    if plan.missing_base is not None:
        raise BackupObjectMissingError(
            plan.missing_base,
            repr(source.store),
            f"a restore of PG {plan.pg_id} to LSN {source.point} needs it: the LOG objects "
            f"after LSN {chain} that an older base would need are gone too ({name} "
            f"continues from LSN {backlink})",
        )
    if plan.base_name is None and chain == 0:
        raise RestoreError(
            f"PG {plan.pg_id}: no PAGES object at or below LSN {source.point} and the "
            f"LOG objects before LSN {first} are gone ({name} continues from LSN "
            f"{backlink}): nothing to start the PG's pages from"
        )
    raise RestoreError(
        f"PG {plan.pg_id}: the LOG objects for LSNs {chain + 1} to {first - 1} are "
        f"missing ({name} continues from LSN {backlink})"
    )


def _changed_images(
    scratch: PageLog, point: int, annulled: tuple[int, ...], page_size: int
) -> SharedImages | None:
    """Every page a record in ``scratch`` touched, materialized at ``point`` into one
    block; None when no record touched a page."""
    changed = scratch.page_nos(with_records=True)
    if not changed:
        return None
    # Anonymous memory, mapped in one go rather than a fault per page.
    block = mmap.mmap(
        -1,
        len(changed) * page_size,
        flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0),
    )
    # The snapshot images already reflect the ranges hidden at or below its
    # LSN (one inside a hidden range is never a base: the catalog skips it);
    # the ranges only filter the records after them.
    scratch.materialize_many(changed, point, array("Q", annulled), block)
    return SharedImages(array("Q", changed), memoryview(block).toreadonly())


def _snapshot_images(
    store: BackupStore, name: str, page_size: int, page_lo: int, page_hi: int
) -> SharedImages:
    """The images of a PAGES object, checked: ascending pages of the PG, one image each."""
    meta, images = decode_object(store.get(name), name, KIND_PAGES)
    try:
        page_nos = array("Q", meta["page_nos"])
    except (KeyError, TypeError, OverflowError) as error:
        raise BackupCorruptError(name, f"bad page list ({error!r})") from None
    if len(images) != len(page_nos) * page_size:
        raise BackupCorruptError(name, "page images do not match the page list")
    if not native._ascending(page_nos):
        raise BackupCorruptError(name, "page numbers do not ascend")
    if page_nos and not (page_lo <= page_nos[0] and page_nos[-1] < page_hi):
        raise BackupCorruptError(name, f"pages outside the PG's range {page_lo}..{page_hi - 1}")
    return SharedImages(page_nos, memoryview(images).toreadonly())
