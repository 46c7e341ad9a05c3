"""Backup stores: where continuous backup puts its bytes.

A *backup store* holds whole objects (byte strings) addressed by
'/'-separated names (:class:`BackupStore`): a local folder
(:class:`LocalFolderStore`, the default), any fsspec filesystem such as S3
(:class:`FsspecStore`), or memory (:class:`MemoryStore`, for simulations).
:func:`open_store` turns the user's ``backup=`` option into one. Staging writes
backup objects (their codec is format/objects.py) into it; restore reads them
back without the source volume.

Invariants: a ``put`` is atomic (a reader sees the old object or the new one,
never a prefix); an object name can never leave the store's root. Store I/O
failures other than a missing object (a full disk, a network error) surface as the ``OSError`` or
backend exception that caused them: retrying is the caller's policy.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import (
    BackupObjectMissingError,
    BackupStoreUnavailableError,
    ConfigurationError,
    InvalidBackupNameError,
)
from ..runtime.disk import make_folders, sync_folder, write_file

# --- object names ---------------------------------------------------------------

NAME_LENGTH_MAX = 512  # characters of a whole name
NAME_PART_LENGTH_MAX = 255  # characters of one part: a file name on common file systems
_NAME = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
_PART_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")

# Temporary files of an unfinished put carry '~', a character no object name
# may hold, so a crash between write and rename never leaves a listable object.
TEMPORARY_MARK = "~"
_TEMPORARY_NAME = re.compile(r"\.~[0-9a-f]{16}\.tmp")


def _name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid object name, or None when it is."""
    if not isinstance(name, str):
        return f"names are str, not {type(name).__name__}"
    if len(name) > NAME_LENGTH_MAX:
        return f"{len(name)} characters, over the limit of {NAME_LENGTH_MAX}"
    if _NAME.fullmatch(name) is not None:
        parts = name.split("/")
        if "." in parts or ".." in parts:
            return "a part is '.' or '..'; names are plain relative paths"
        if max(len(part) for part in parts) > NAME_PART_LENGTH_MAX:
            return f"a part is over {NAME_PART_LENGTH_MAX} characters"
        return None
    if not name:
        return "the name is empty"
    if name.startswith("/"):
        return "names are relative: no leading '/'"
    if "" in name.split("/"):
        return "empty part: a trailing or doubled '/'"
    bad = next(character for character in name if character not in _PART_CHARACTERS | {"/"})
    return f"character {bad!r} is not one of A-Z a-z 0-9 . _ - and the separator /"


def check_name(name: object) -> str:
    """``name`` when it is a valid object name (docs/format.md); else InvalidBackupNameError."""
    problem = _name_problem(name)
    if problem is not None:
        raise InvalidBackupNameError(name, problem)
    assert isinstance(name, str)
    return name


def is_valid_name(name: object) -> bool:
    return _name_problem(name) is None


def check_prefix(prefix: object) -> str:
    """``prefix`` when it can start a valid name: '' or a name, optionally cut short or ending in '/'."""
    if prefix == "":
        return ""
    if not isinstance(prefix, str):
        raise InvalidBackupNameError(prefix, f"prefixes are str, not {type(prefix).__name__}")
    folder, _, tail = prefix.rpartition("/")
    problem = None
    if prefix.startswith("/"):
        problem = "names are relative: no leading '/'"
    elif folder:
        problem = _name_problem(folder)
    if problem is None and tail and any(character not in _PART_CHARACTERS for character in tail):
        problem = "a character is not one of A-Z a-z 0-9 . _ - and the separator /"
    if problem is None and len(prefix) > NAME_LENGTH_MAX:
        problem = f"{len(prefix)} characters, over the limit of {NAME_LENGTH_MAX}"
    if problem is not None:
        raise InvalidBackupNameError(prefix, f"as a list prefix: {problem}")
    return prefix


def _name_conflict(name: str) -> InvalidBackupNameError:
    return InvalidBackupNameError(
        name, "it clashes with another object: a name is never both an object and a folder"
    )


# --- stores ---------------------------------------------------------------------


@runtime_checkable
class BackupStore(Protocol):
    """Objects by name. ``put`` is atomic; ``get`` of a missing name raises BackupObjectMissingError."""

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes: ...

    def delete(self, name: str) -> None: ...

    def exists(self, name: str) -> bool: ...

    def list(self, prefix: str = "") -> builtins.list[str]: ...


DURABILITY_MODES = ("fsync", "os")


class LocalFolderStore:
    """Objects as files under a folder, created if missing (unless ``create=False``,
    for readers: a missing folder is then an error); object 'a/b' is the file 'a/b'.

    ``put`` writes a temporary file in the object's folder, fsyncs it, renames
    it over the object and fsyncs the folder (new folders are fsynced into
    their parents), so after a crash the object is the old one or the new one.
    A crash may leave a temporary file: listing ignores it and
    :meth:`remove_temporary_files` deletes it. ``durability="os"`` skips the
    fsyncs (atomic but not durable; for tests and benchmarks).
    """

    def __init__(
        self, path: str | os.PathLike[str], durability: str = "fsync", *, create: bool = True
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise ConfigurationError(
                f"backup store durability {durability!r} is not one of {DURABILITY_MODES}"
            )
        self.root = Path(path)
        self.durability = durability
        if not create and not self.root.is_dir():
            detail = "it is a file" if self.root.exists() else "no such folder"
            raise BackupStoreUnavailableError(str(path), f"{detail}: nothing to read")
        try:
            make_folders(self.root, self.durability == "fsync")
        except (FileExistsError, NotADirectoryError):
            raise BackupStoreUnavailableError(
                str(path), "the path or one of its parents is a file, not a folder"
            ) from None

    def __repr__(self) -> str:
        return f"LocalFolderStore({str(self.root)!r})"

    def _sync_folder(self, folder: Path) -> None:
        if self.durability == "fsync":
            sync_folder(folder)

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*check_name(name).split("/"))

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        try:
            make_folders(path.parent, self.durability == "fsync")
        except (FileExistsError, NotADirectoryError):
            raise _name_conflict(name) from None
        temporary = path.parent / f".{TEMPORARY_MARK}{secrets.token_hex(8)}.tmp"
        assert _TEMPORARY_NAME.fullmatch(temporary.name)
        try:
            write_file(temporary, data, self.durability == "fsync", exclusive=True)
            os.replace(temporary, path)
        except BaseException as error:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            if isinstance(error, IsADirectoryError):
                raise _name_conflict(name) from None
            raise
        self._sync_folder(path.parent)

    def get(self, name: str) -> bytes:
        path = self._path(name)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BackupObjectMissingError(name, repr(self)) from None

    def delete(self, name: str) -> None:
        path = self._path(name)
        if not path.is_file():
            return
        try:
            path.unlink()
        except FileNotFoundError:
            return
        self._sync_folder(path.parent)

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def _walk(self, prefix: str) -> builtins.list[tuple[str, Path]]:
        """(name, path) of every file below the folder of ``prefix`` whose name starts with it."""
        folder = prefix.rpartition("/")[0]
        found = []
        pending = [(self.root.joinpath(*folder.split("/")) if folder else self.root, folder)]
        while pending:
            directory, relative = pending.pop()
            try:
                with os.scandir(directory) as iterator:
                    entries = list(iterator)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                # The walk starts in the prefix's folder, so a folder whose name
                # does not start with the prefix holds no name that does.
                name = f"{relative}/{entry.name}" if relative else entry.name
                if not name.startswith(prefix):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append((Path(entry.path), name))
                elif entry.is_file(follow_symlinks=False):
                    found.append((name, Path(entry.path)))
        return found

    def list(self, prefix: str = "") -> builtins.list[str]:
        check_prefix(prefix)
        return sorted(name for name, _ in self._walk(prefix) if is_valid_name(name))

    def remove_temporary_files(self) -> builtins.list[str]:
        """Deletes what unfinished puts left (after a crash); only safe when no put is running."""
        removed = []
        for name, path in self._walk(""):
            if _TEMPORARY_NAME.fullmatch(path.name):
                path.unlink(missing_ok=True)
                removed.append(name)
        return sorted(removed)


class MemoryStore:
    """Objects in a dict, for simulations and tests that want a store without files.

    It refuses a name that is both an object and a folder, as a file system
    does, so code that works here works on a local folder too.
    """

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self._folder_counts: dict[str, int] = {}  # folder name -> objects below it

    def __repr__(self) -> str:
        return f"MemoryStore({len(self.objects)} objects)"

    @staticmethod
    def _folders(name: str) -> builtins.list[str]:
        parts = name.split("/")
        return ["/".join(parts[:end]) for end in range(1, len(parts))]

    def put(self, name: str, data: bytes) -> None:
        folders = self._folders(check_name(name))
        if name in self._folder_counts or any(folder in self.objects for folder in folders):
            raise _name_conflict(name)
        if name not in self.objects:
            for folder in folders:
                self._folder_counts[folder] = self._folder_counts.get(folder, 0) + 1
        self.objects[name] = bytes(data)

    def get(self, name: str) -> bytes:
        try:
            return self.objects[check_name(name)]
        except KeyError:
            raise BackupObjectMissingError(name, repr(self)) from None

    def delete(self, name: str) -> None:
        if self.objects.pop(check_name(name), None) is None:
            return
        for folder in self._folders(name):
            self._folder_counts[folder] -= 1
            if not self._folder_counts[folder]:
                del self._folder_counts[folder]

    def exists(self, name: str) -> bool:
        return check_name(name) in self.objects

    def list(self, prefix: str = "") -> builtins.list[str]:
        check_prefix(prefix)
        return sorted(name for name in self.objects if name.startswith(prefix))


def _import_fsspec(target: str) -> Any:
    # fsspec is optional: imported here, and through importlib so type checking
    # does not need it installed (it ships no type information either).
    try:
        return importlib.import_module("fsspec.core")
    except ImportError:
        raise BackupStoreUnavailableError(
            target,
            "URL backup stores need the fsspec package (pip install fsspec, plus the "
            "backend of the scheme, e.g. s3fs for s3://)",
        ) from None


class FsspecStore:
    """Objects in any fsspec filesystem: ``s3://bucket/prefix`` (with s3fs), ``memory://...``.

    Atomicity comes from the backend: an object store PUT (S3, GCS, Azure) and
    ``memory://`` replace an object whole. A local URL (``file://``) is served
    by a :class:`LocalFolderStore`, which renames and fsyncs; filesystems with
    neither property (ftp, sftp) may show a partly written object. Object
    stores have no folders, so they take both 'a' and 'a/b': the rule that a
    name is never both an object and a folder is the writer's to keep there.
    A store may be shared (another writer, a restore in another process), so
    ``exists`` and ``list`` ask the backend each time, never its caches.
    """

    def __init__(self, url: str, *, create: bool = True, **storage_options: Any) -> None:
        core = _import_fsspec(url)
        try:
            filesystem, root = core.url_to_fs(url, **storage_options)
        except ImportError as error:
            raise BackupStoreUnavailableError(
                url, f"the fsspec backend of this URL is missing: {error}"
            ) from None
        except ValueError as error:
            raise BackupStoreUnavailableError(url, str(error)) from None
        self.url = url
        self.storage_options = dict(storage_options)  # recorded in volume.meta (location)
        self.filesystem = filesystem
        self.root = str(root).rstrip("/")
        protocols = filesystem.protocol
        protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols)
        self.local: LocalFolderStore | None = None
        if "file" in protocols or "local" in protocols:
            self.local = LocalFolderStore(self.root or "/", create=create)

    def __repr__(self) -> str:
        return f"FsspecStore({self.url!r})"

    def _path(self, name: str) -> str:
        check_name(name)
        return f"{self.root}/{name}" if self.root else name

    def put(self, name: str, data: bytes) -> None:
        if self.local is not None:
            self.local.put(name, data)
            return
        path = self._path(name)
        try:
            self.filesystem.pipe_file(path, bytes(data))
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            raise _name_conflict(name) from None

    def get(self, name: str) -> bytes:
        if self.local is not None:
            return self.local.get(name)
        path = self._path(name)
        try:
            return bytes(self.filesystem.cat_file(path))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BackupObjectMissingError(name, repr(self)) from None

    def delete(self, name: str) -> None:
        if self.local is not None:
            self.local.delete(name)
            return
        path = self._path(name)
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self.filesystem.rm_file(path)

    def exists(self, name: str) -> bool:
        if self.local is not None:
            return self.local.exists(name)
        path = self._path(name)
        # Others write the same bucket: what this filesystem object cached may be stale.
        self.filesystem.invalidate_cache(path)
        return bool(self.filesystem.isfile(path))

    def list(self, prefix: str = "") -> builtins.list[str]:
        if self.local is not None:
            return self.local.list(prefix)
        check_prefix(prefix)
        folder = prefix.rpartition("/")[0]
        start = "/".join(part for part in (self.root, folder) if part)
        self.filesystem.invalidate_cache(start)  # as in exists: list what the store holds now
        names = []
        for path in self.filesystem.find(start, withdirs=False):
            path = str(path)
            if self.root and not path.startswith(self.root + "/"):
                continue
            name = path[len(self.root) :].lstrip("/")
            if name.startswith(prefix) and is_valid_name(name):
                names.append(name)
        return sorted(names)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class StoreLocation:
    """Where a store is, as a volume records it (volume.meta): a folder or a URL, and
    the fsspec ``storage_options`` it was opened with. :func:`open_store` opens it."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)


def store_location(target: Any) -> StoreLocation | None:
    """How a ``backup=`` target is found again: None for a store that lives only in
    this process (a MemoryStore, any other object)."""
    if isinstance(target, StoreLocation):
        return target
    if isinstance(target, str | os.PathLike):
        location = os.fspath(target)
        if isinstance(location, str) and not _URL.match(location):
            return StoreLocation(os.path.abspath(location))  # reopens from any folder
        return StoreLocation(str(location))
    if isinstance(target, LocalFolderStore):
        return StoreLocation(str(target.root.absolute()))
    if isinstance(target, FsspecStore):
        return StoreLocation(target.url, dict(target.storage_options))
    return None


def open_store(
    target: BackupStore | StoreLocation | str | os.PathLike[str], *, create: bool = True
) -> BackupStore:
    """The store for a ``backup=`` option: a store as is, a URL, or a local folder.

    ``file://PATH`` and paths without a scheme give a :class:`LocalFolderStore`;
    any other ``scheme://`` URL gives an :class:`FsspecStore`. ``create=False``
    opens a store only to read it (a restore): a missing local folder raises
    :class:`BackupStoreUnavailableError` instead of being made.
    """
    if isinstance(target, BackupStore):
        return target
    if isinstance(target, StoreLocation):
        if target.storage_options and _URL.match(target.url):
            return FsspecStore(target.url, create=create, **target.storage_options)
        target = target.url
    if not isinstance(target, (str, os.PathLike)):
        raise ConfigurationError(
            f"backup target must be a folder path, a URL or a backup store, not "
            f"{type(target).__name__}"
        )
    location = os.fspath(target)
    if not isinstance(location, str):
        raise ConfigurationError(f"backup target {location!r} must be a str path, not bytes")
    if not location.strip() or "\x00" in location:
        raise ConfigurationError(f"backup target {location!r} names no folder or URL")
    if location[: len("file://")].lower() == "file://":
        location = location[len("file://") :]
        if not location:
            raise ConfigurationError("backup target 'file://' names no folder")
        return LocalFolderStore(location, create=create)
    if _URL.match(location):
        return FsspecStore(location, create=create)
    return LocalFolderStore(location, create=create)


# --- retention ------------------------------------------------------------------


def expired(names_with_times: list[tuple[str, float]], horizon: float, keep: set[str]) -> list[str]:
    """Names to delete: those whose time is strictly before ``horizon``, minus ``keep``.

    A name's time is the newest clock time its object covers (for a LOG
    object, its last record's). ``horizon`` is the earliest restorable time to
    preserve (now minus the retention period); ``keep`` holds what a restore
    at or after the horizon still needs although it is older: the newest page
    images before the horizon and the log after them, the manifests. A NaN
    time never expires. A name listed twice is returned once; the result is
    sorted by time, then name. Pure: it deletes nothing.
    """
    newest: dict[str, float] = {}
    for name, time in names_with_times:
        covered = math.inf if math.isnan(time) else time
        newest[name] = max(covered, newest.get(name, -math.inf))
    return [
        name
        for time, name in sorted((time, name) for name, time in newest.items())
        if time < horizon and name not in keep
    ]
