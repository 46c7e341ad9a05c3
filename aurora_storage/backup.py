"""Continuous backup (step 6 of the write path) and point-in-time restore.

Storage stages each protection group's log to a backup store once per PG,
not six times: for each staging round the writer names one healthy segment
per PG, and that node uploads the PG's chain frames of the round as a LOG
object. Periodically a node also uploads a PAGES object: every page of the PG
materialized at a staged LSN, the base a restore starts from once older LOG
objects are gone. The writer keeps two kinds of small objects: ``rounds/``
manifests (each round's VDL and the CPLs it staged with their times: the
time index of the backup) and ``volume/history`` (geometry, history
versions, truncations). Objects are lz4-compressed and xxh3-checksummed
(backup_store.py; docs/format.md, "Backup objects").

Names (all numbers zero-padded so names sort by LSN)::

    log/pg-<pg>/<first_lsn>-<last_lsn>   frames of one PG, chained
    pages/pg-<pg>/<lsn>                  page images of one PG at lsn
    rounds/<vdl>-<milliseconds>          one staging round
    volume/history                       geometry, versions, truncations

Restore to time T reads only the store: the version in effect at T and every
truncation give the hidden LSN ranges; the last CPL at or before T outside
them is the restore point; each PG's newest PAGES object at or below it and
the LOG objects after it (their backlinks must chain, or the restore names
the missing range) are applied in C, and the resulting page images are
installed into a new volume's segments at the restore point, shared by the
six replicas, not written again through the writer.
"""

from __future__ import annotations

import bisect
import mmap
import os
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import log, native
from .backup_store import (
    KIND_HISTORY,
    KIND_LOG,
    KIND_MANIFEST,
    KIND_PAGES,
    BackupStore,
    decode_object,
    encode_object,
    open_store,
)
from .clock import to_seconds
from .errors import (
    BackupCorruptError,
    CorruptionError,
    HistoryError,
    TimeOutsideWindowError,
)
from .history import History, merge_ranges, truncation_ranges
from .pagelog import new_page_log
from .segment import SharedImages

if TYPE_CHECKING:
    from .segment import Segment
    from .volume import Volume

HISTORY_NAME = "volume/history"
STAGING_INTERVAL_DEFAULT = 60.0  # seconds between staging rounds: latest restorable trails by this
SNAPSHOT_EVERY_BYTES = 64 * 1024 * 1024  # staged log bytes of a PG between PAGES objects
DAY = 86400.0


def log_name(pg_id: int, first_lsn: int, last_lsn: int) -> str:
    return f"log/pg-{pg_id:08d}/{first_lsn:020d}-{last_lsn:020d}"


def pages_name(pg_id: int, lsn: int) -> str:
    return f"pages/pg-{pg_id:08d}/{lsn:020d}"


def round_name(vdl: int, time: float) -> str:
    return f"rounds/{vdl:020d}-{max(0, round(time * 1000)):015d}"


class RestoreError(HistoryError):
    """A restore cannot be done: a time outside the window, or objects missing."""


# --- node side: building objects from a segment --------------------------------------


def build_log_object(
    segment: Segment, from_lsn: int, upto_lsn: int
) -> tuple[bytes, dict[str, Any]] | None:
    """The LOG object of a segment's chain frames in (from_lsn, upto_lsn], or None if empty.

    Raises CorruptionError if the chain no longer holds the start of the range.
    """
    start = bisect.bisect_right(segment.chain_last_lsns, from_lsn)
    end = bisect.bisect_right(segment.chain_last_lsns, upto_lsn)
    if start == end:
        return None
    if segment.chain_first_lsns[start] <= from_lsn:
        raise CorruptionError(f"PG {segment.pg_id}: a frame straddles staged LSN {from_lsn}")
    first_frame = log.decode_frame(
        segment.chain_frames[start], segment.geometry.page_size, segment.page_lo, segment.page_hi
    )
    if first_frame.backlink > from_lsn:
        raise CorruptionError(f"PG {segment.pg_id}: frames after LSN {from_lsn} were collected")
    cpl_start = bisect.bisect_right(segment.cpl_lsns, from_lsn)
    cpl_end = bisect.bisect_right(segment.cpl_lsns, upto_lsn)
    meta = {
        "pg_id": segment.pg_id,
        "first_lsn": segment.chain_first_lsns[start],
        "last_lsn": segment.chain_last_lsns[end - 1],
        "backlink": first_frame.backlink,
        "cpls": segment.cpl_lsns[cpl_start:cpl_end],
        "times": segment.cpl_times[cpl_start:cpl_end],
    }
    payload = b"".join(segment.chain_frames[start:end])
    return encode_object(KIND_LOG, payload, meta), meta


def build_pages_object(segment: Segment, lsn: int, annulled: tuple[int, ...]) -> bytes:
    """The PAGES object of every page the segment changed at or below ``lsn``."""
    page_nos, _, images = segment.images_at(lsn, annulled)
    meta = {"pg_id": segment.pg_id, "lsn": lsn, "page_nos": page_nos}
    return encode_object(KIND_PAGES, images, meta)


# --- writer side: staging state --------------------------------------------------------


@dataclass
class BackupOptions:
    target: Any = None  # a folder path, a URL, or a BackupStore
    retention_days: float = 1.0
    staging_interval: float = STAGING_INTERVAL_DEFAULT

    def check(self) -> None:
        from .errors import ConfigurationError

        if not 1 <= self.retention_days <= 35:
            raise ConfigurationError(
                f"backup_retention_days {self.retention_days} must be from 1 to 35"
            )
        if not self.staging_interval > 0:
            raise ConfigurationError(f"staging interval {self.staging_interval} must be positive")


@dataclass
class StagingState:
    """What the writer knows of the backup: per PG, staged up to where."""

    staged_lsn: dict[int, int] = field(default_factory=dict)
    snapshot_lsn: dict[int, int] = field(default_factory=dict)
    bytes_since_snapshot: dict[int, int] = field(default_factory=dict)
    last_round_time: float = float("-inf")
    last_round_vdl: int = 0
    last_round_time_recorded: float = float("-inf")
    earliest: float = float("-inf")  # restores before this were given up by retention
    rounds: list[tuple[int, float]] = field(default_factory=list)  # (VDL, time) recorded
    expired_vdl: int = 0  # retention already applied up to this round's VDL
    last_cpl: tuple[int, float] = (0, 0.0)  # the newest CPL a recorded round names
    # CPLs (with times) staged but named by no recorded round yet: a round that
    # fails after some PGs were staged leaves them to the next round.
    unnamed_cpls: list[tuple[int, float]] = field(default_factory=list)
    last_error: str = ""  # why the last staging round failed; empty after a good one
    # (CPL, time) where the backup begins when the volume has no frames below it
    # to stage (a restored volume's base, or the VDL of a volume given a new
    # backup): the pages there go up first.
    base: tuple[int, float] = (0, 0.0)
    history_written: int = -1  # signature of the history last uploaded


def history_object(volume: Volume) -> bytes:
    options = volume.options
    meta = {
        "volume_id": volume.volume_id,
        "page_size": options.page_size,
        "segment_size": options.segment_size,
        "capacity": options.capacity,
        "versions": volume.history.encode(),
        "truncations": [list(t) for t in volume.truncations],
        "earliest": max(volume.history.created_at, volume.staging.earliest),
    }
    return encode_object(KIND_HISTORY, b"", meta)


# --- reading a backup ---------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    vdl: int
    time: float
    cpls: tuple[int, ...]
    times: tuple[float, ...]


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
        for name in store.list("log/"):
            pg_part, range_part = name.split("/")[1:]
            first, last = range_part.split("-")
            self.logs.setdefault(int(pg_part[3:]), []).append((int(first), int(last), name))
        for name in store.list("pages/"):
            pg_part, lsn_part = name.split("/")[1:]
            self.snapshots.setdefault(int(pg_part[3:]), []).append((int(lsn_part), name))
        for entries in self.logs.values():
            entries.sort()
        for snapshots in self.snapshots.values():
            snapshots.sort()
        self.rounds: list[Round] = []
        self.round_names = store.list("rounds/")
        for name in self.round_names if read_rounds else ():
            round_meta, _ = decode_object(store.get(name), name, KIND_MANIFEST)
            self.rounds.append(
                Round(
                    int(round_meta["vdl"]),
                    float(round_meta["time"]),
                    tuple(int(v) for v in round_meta["cpls"]),
                    tuple(float(v) for v in round_meta["times"]),
                )
            )
        self.rounds.sort(key=lambda entry: entry.vdl)

    def window(self) -> tuple[float, float]:
        """(earliest, latest) restorable times."""
        if not self.rounds:
            raise RestoreError("the backup holds no staged round yet")
        latest = max(entry.time for entry in self.rounds)
        earliest = max(
            self.history.created_at, float(self.meta.get("earliest", self.history.created_at))
        )
        return earliest, latest

    def base_snapshot(
        self, pg_id: int, upto: int, hidden: tuple[int, ...]
    ) -> tuple[int, str | None]:
        """(LSN, name) of the PG's newest PAGES object at or below ``upto`` that no range
        of ``hidden`` covers, or (0, None). A snapshot at a hidden LSN was taken before
        the backtrack that hid it: its images hold changes a restore must not show."""
        base: tuple[int, str | None] = (0, None)
        for lsn, name in self.snapshots.get(pg_id, []):
            if lsn <= upto and not inside(lsn, hidden):
                base = (lsn, name)
        return base

    def plan(self, point: int, annulled: tuple[int, ...]) -> list[RestorePlan]:
        """What a restore to ``point`` reads, per PG: its base snapshot and the LOG
        objects after it, up to the point."""
        plans = []
        for pg_id in sorted(set(self.logs) | set(self.snapshots)):
            base_lsn, base_name = self.base_snapshot(pg_id, point, annulled)
            logs = [
                entry
                for entry in self.logs.get(pg_id, [])
                if entry[1] > base_lsn and entry[0] <= point
            ]
            plans.append(RestorePlan(pg_id, base_lsn, base_name, logs))
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


def inside(lsn: int, annulled: tuple[int, ...]) -> bool:
    """True if ``lsn`` lies in one of the flat (lo, hi] ranges."""
    return any(annulled[i] < lsn <= annulled[i + 1] for i in range(0, len(annulled), 2))


Progress = Callable[[int, int], None]


@dataclass
class RestorePlan:
    """What a restore reads for one PG: its base snapshot (LSN 0 and no name: none)
    and the LOG objects after it, oldest first (BackupCatalog.plan)."""

    pg_id: int
    base_lsn: int
    base_name: str | None
    logs: list[tuple[int, int, str]]

    @property
    def names(self) -> list[str]:
        """The objects it reads, in order."""
        return [*([self.base_name] if self.base_name else []), *(n for _, _, n in self.logs)]


def restore(
    source: Any,
    to: float | Any,
    path: str | os.PathLike[str] | None,
    *,
    progress: Progress | None = None,
    **create_options: Any,
) -> Volume:
    """A new volume holding exactly the commits of the backup ``source`` at or before ``to``.

    Each PG's pages are materialized once, at the restore point (:func:`_pg_images`),
    then installed into the new volume's six segments at that LSN, shared and
    not replayed (``Volume._start_from_images``): the way a restore hydrates
    segments directly rather than writing every page again.
    """
    from .volume import Volume

    store = open_store(source)
    catalog = BackupCatalog(store)
    moment = to_seconds(to)
    point, annulled = catalog.restore_point(moment)
    meta = catalog.meta
    plans = catalog.plan(point, annulled)
    total = sum(len(plan.names) for plan in plans)
    done = 0

    def read_one() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    volume = Volume.create(
        path,
        page_size=int(meta["page_size"]),
        segment_size=int(meta["segment_size"]),
        capacity=int(meta["capacity"]),
        **create_options,
    )
    try:
        pages: dict[int, list[SharedImages]] = {}
        for plan in plans:
            layers = _pg_images(store, plan, point, annulled, volume, read_one)
            if layers:
                pages[plan.pg_id] = layers
        if pages:
            volume._start_from_images(point, pages)
    except BaseException:
        volume.close()
        raise
    volume.restored_from = (moment, point)
    return volume


def _pg_images(
    store: BackupStore,
    plan: RestorePlan,
    point: int,
    annulled: tuple[int, ...],
    volume: Volume,
    read_one: Callable[[], None],
) -> list[SharedImages]:
    """One PG's pages at ``point``, as layers of shared images (Segment.start_at).

    The snapshot's images are used as they are, without a copy: its payload
    becomes a shared block. A scratch page log borrows them too, takes the LOG
    objects' records, and materializes, in one C call, every page a record
    touched into a second block, which comes first: it holds the newer images.
    Raises BackupCorruptError naming a damaged object, RestoreError for a gap.
    """
    geometry = volume.geometry
    page_size = geometry.page_size
    page_lo, page_hi = geometry.page_range(plan.pg_id)
    scratch = new_page_log(page_size, volume.options.backend)
    try:
        snapshot = None
        if plan.base_name is not None:
            snapshot = _snapshot_images(store, plan.base_name, page_size, page_lo, page_hi)
            scratch.share_images(snapshot.page_nos, snapshot.block, plan.base_lsn)
            read_one()
        chain = plan.base_lsn
        for first, last, name in plan.logs:
            object_meta, frames = decode_object(store.get(name), name, KIND_LOG)
            if int(object_meta["backlink"]) > chain:
                raise RestoreError(
                    f"PG {plan.pg_id}: the LOG objects for LSNs {chain + 1} to {first - 1} are "
                    f"missing ({name} continues from LSN {object_meta['backlink']})"
                )
            position = 0
            while position < len(frames):
                try:
                    frame = log.decode_frame(frames, page_size, page_lo, page_hi, position)
                except CorruptionError as error:
                    raise BackupCorruptError(name, str(error)) from None
                if frame.pg_id != plan.pg_id:
                    raise BackupCorruptError(name, f"holds a frame of PG {frame.pg_id}")
                # Frames never straddle a staged LSN (the snapshot's) or a CPL (the point).
                if plan.base_lsn < frame.last_lsn and frame.first_lsn <= point:
                    scratch.append(frame.body)
                position += frame.size
            chain = last
            read_one()
        layers = []
        changed = scratch.page_nos(with_records=True)
        if changed:
            # Anonymous memory, mapped in one go rather than a fault per page.
            block = mmap.mmap(
                -1,
                len(changed) * page_size,
                flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0),
            )
            # The snapshot images already reflect the ranges hidden at or below its
            # LSN (one inside a hidden range is never a base: restore() skips it);
            # the ranges only filter the records after them.
            pairs = array("Q", annulled)
            scratch.materialize_many(changed, point, pairs, block)
            layers.append(SharedImages(array("Q", changed), memoryview(block).toreadonly()))
        if snapshot is not None:
            layers.append(snapshot)
        return layers
    finally:
        scratch.close()


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
