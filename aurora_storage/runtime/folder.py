"""A volume's folder: its metadata file, its writer lock, the marker of an unfinished one.

``volume.meta`` (format/metadata.py) holds the options, where the backup
goes and the base of a restored volume; it is replaced atomically. The
writer holds ``volume.lock`` (flock) while it has the volume open. A create
or restore writes ``volume.unfinished`` before anything else and removes it
once the volume is whole: such a folder never opens, and a new create or
restore clears it, provided it holds nothing but a volume's names
(docs/format.md, "Volume folder").
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import backup as backup_module
from .. import checks
from ..backup.store import StoreLocation, store_location
from ..config import VolumeOptions, node_names
from ..errors import (
    ConfigurationError,
    CorruptionError,
    InvalidArgumentError,
    StorageWriteError,
    VolumeExistsError,
    VolumeIncompleteError,
    VolumeInUseError,
    VolumeNotFoundError,
)
from ..format import metadata as metafile
from .disk import RealDisk, make_folders

VOLUME_META = "volume.meta"
LOCK_FILE = "volume.lock"
# Present from the first byte a create or restore writes until the volume is
# whole: such a folder never opens, and a new create or restore clears it.
UNFINISHED_MARKER = "volume.unfinished"
# What an unfinished create or restore may leave in its folder (and nothing else).
UNFINISHED_NAMES = frozenset(
    {UNFINISHED_MARKER, LOCK_FILE, VOLUME_META, VOLUME_META + ".tmp", UNFINISHED_MARKER + ".tmp"}
    | {"nodes"}
)


def replace_volume_meta(root: Path, durability: str, body: dict[str, Any]) -> None:
    """Replaces volume.meta atomically; a disk that cannot write raises StorageWriteError."""
    data = metafile.encode(metafile.KIND_VOLUME, body)
    try:
        RealDisk(root, "fsync" if durability == "fsync" else "os").replace(VOLUME_META, data)
    except OSError as error:
        raise StorageWriteError(f"{root / VOLUME_META}: write failed: {error}") from None


def volume_body(options: VolumeOptions, volume_id: str) -> dict[str, Any]:
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
        "nodes": list(node_names(options.nodes)),
        **({"placement": options.placement} if options.placement is not None else {}),
    }


def read_volume_meta(
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
            nodes=len(body.get("nodes", ())) or 6,
            placement=body.get("placement"),
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


def recorded_clock(path: str | os.PathLike[str]) -> str:
    """The kind of clock the volume at ``path`` was made with (volume.meta)."""
    options, *_ = read_volume_meta(checks.path(path))
    return options.clock


def lock_folder(root: Path) -> Any:
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


def free_for_a_new_volume(root: Path) -> bool:
    """True if ``root`` is empty (but for a lock file) or holds only what an
    unfinished create or restore left, its marker among it."""
    names = {entry.name for entry in root.iterdir()}
    return not names - {LOCK_FILE} or (UNFINISHED_MARKER in names and names <= UNFINISHED_NAMES)


def claim_new_folder(root: Path, sync: bool) -> tuple[Any, bool]:
    """Makes ``root`` ready for a new volume: (its lock, True if the folder was made).

    The folder must be missing, empty, or hold only what an unfinished create or
    restore left (its marker present), which is cleared under the lock. The
    marker is then written, durably, before anything else.
    """
    made = not root.exists()
    if not made and (not root.is_dir() or not free_for_a_new_volume(root)):
        raise VolumeExistsError(str(root))
    try:
        make_folders(root, sync)
    except OSError as error:
        raise InvalidArgumentError(f"{root}: cannot make the folder: {error}") from None
    lock = lock_folder(root)
    try:
        # Again under the lock: another create may have finished a volume here since.
        if not free_for_a_new_volume(root):
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


def clear_new_folder(root: Path, made: bool) -> None:
    """Removes what a failed create or restore wrote (the folder too if it made it)."""
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            if entry.name in UNFINISHED_NAMES - {UNFINISHED_MARKER, LOCK_FILE}:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        # The marker goes last: until then the folder never opens.
        (root / UNFINISHED_MARKER).unlink(missing_ok=True)
        (root / LOCK_FILE).unlink(missing_ok=True)
        if made:
            root.rmdir()


def write_volume_meta(
    root: Path,
    options: VolumeOptions,
    volume_id: str,
    backup: backup_module.BackupOptions,
    base: tuple[int, float],
) -> None:
    """Replaces volume.meta: the options, where the backup goes, the base LSN."""
    body = volume_body(options, volume_id)
    target = backup.target
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
        body["backup_retention_days"] = backup.retention_days
        body["backup_staging_interval"] = backup.staging_interval
    if base[0]:
        body["base_lsn"], body["base_time"] = base
    replace_volume_meta(root, options.durability, body)


def folders_made_by(path: str | os.PathLike[str] | None) -> tuple[Path, bool] | None:
    """What a restore into ``path`` makes: the outermost folder of the path that is
    missing now (False: remove it whole), or the path itself when it is an empty
    folder now (True: keep it, empty)."""
    if path is None:
        return None
    folder = Path(path).absolute()
    if folder.is_dir():
        return None if any(folder.iterdir()) else (folder, True)
    while not folder.parent.exists() and folder.parent != folder:
        folder = folder.parent
    return folder, False


def remove_made(made: tuple[Path, bool] | None) -> None:
    """Undoes what a failed restore made (:func:`folders_made_by`)."""
    if made is None:
        return
    folder, keep = made
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def stored_volume(
    root: Path, backup_given: bool
) -> tuple[VolumeOptions, str, tuple[int, float], backup_module.BackupOptions | None]:
    """What a volume folder records: options, id, restore base, and where its backup goes
    (a store that lived only in its creator's process must be given again)."""
    if (root / UNFINISHED_MARKER).exists():
        raise VolumeIncompleteError(str(root))
    options, volume_id, stored, base = read_volume_meta(root)
    if not backup_given and stored is not None and isinstance(stored.target, RecordedObject):
        raise ConfigurationError(
            f"{root} backs up to a store given as an object at create "
            f"({stored.target.name}): give it again, Volume.open(path, backup=store)"
        )
    return options, volume_id, base, stored


def recorded_options(
    root: Path | None,
    options: VolumeOptions | None,
    volume_id: str,
    backup: Any,
    backup_staging: str | None,
) -> tuple[VolumeOptions, str, tuple[int, float], backup_module.BackupOptions]:
    """The options, volume id, base (LSN, time) and backup a reopen uses: what the
    folder's volume.meta records (its backup unless another is given), or the
    ``options`` given with disks."""
    backup_options = backup_module.BackupOptions(backup, staging=backup_staging)
    base = (0, 0.0)
    if root is not None:
        options, volume_id, base, stored = stored_volume(root, backup is not None)
        if backup is None and stored is not None:
            backup_options = stored
            backup_options.staging = backup_staging
    backup_options.check()
    if options is None:
        raise ConfigurationError("Volume.open needs a path, or options with disks")
    return options, volume_id, base, backup_options


def missing_node_folders(root: Path, fleet: tuple[str, ...]) -> list[str]:
    """The nodes of ``fleet`` whose folder is gone from the volume's folder."""
    return [name for name in fleet if not (root / "nodes" / name).exists()]
