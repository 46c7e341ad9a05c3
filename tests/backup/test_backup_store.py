"""Backup stores and backup objects (aurora_storage/backup/store.py, format/objects.py, docs/format.md).

The store contract runs on every store: the local folder (the default), the
in-memory store, fsspec's ``memory://`` and ``file://`` filesystems, and
``s3://`` on a local S3 server (conftest.py). Everything the fsspec runs check is also checked on
the local store, so a machine without fsspec still covers the behaviour.
Backup objects are built by an independent writer in this file that follows
docs/format.md byte by byte, then broken in every shape the validity rule
names: truncation at every cut point, every flipped bit, and each field made
wrong under a good checksum.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import struct
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lz4.block
import msgpack
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aurora_storage.backup.store import (
    BackupStore,
    FsspecStore,
    LocalFolderStore,
    MemoryStore,
    check_name,
    expired,
    open_store,
)
from aurora_storage.errors import (
    BackupCorruptError,
    BackupObjectMissingError,
    BackupStoreUnavailableError,
    ConfigurationError,
    CorruptionError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidBackupNameError,
)
from aurora_storage.format import objects
from aurora_storage.format.objects import (
    KIND_HISTORY,
    KIND_LOG,
    KIND_MANIFEST,
    KIND_PAGES,
    MAGIC,
    decode_object,
    encode_object,
)

HEADER = struct.Struct("<IHHIIIIQ")  # written out again here: the test reads the spec, not the code
NAME_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"

# --- an independent writer, straight from docs/format.md ----------------------------


def build(
    kind: int = KIND_LOG,
    meta_bytes: bytes = b"\x80",
    compressed: bytes = b"",
    raw_length: int = 0,
    *,
    magic: int = MAGIC,
    version: int = 1,
    reserved: int = 0,
    meta_length: int | None = None,
    compressed_length: int | None = None,
) -> bytes:
    """A backup object with these fields and a correct checksum, whatever the fields say."""
    prefix = HEADER.pack(
        magic,
        version,
        kind,
        len(meta_bytes) if meta_length is None else meta_length,
        len(compressed) if compressed_length is None else compressed_length,
        raw_length,
        reserved,
        0,
    )[:24]
    checksum = xxhash.xxh3_64_intdigest(prefix + meta_bytes + compressed)
    return prefix + struct.pack("<Q", checksum) + meta_bytes + compressed


def build_payload(
    payload: bytes, meta: dict[str, Any], kind: int = KIND_LOG, **fields: Any
) -> bytes:
    compressed = lz4.block.compress(payload, store_size=False) if payload else b""
    meta_bytes = msgpack.packb(meta, use_bin_type=True)
    return build(kind, meta_bytes, compressed, len(payload), **fields)


def reseal(data: bytes, **fields: int) -> bytes:
    """``data`` with header fields replaced and its checksum made right again."""
    names = [
        "magic",
        "version",
        "kind",
        "meta_length",
        "compressed_length",
        "raw_length",
        "reserved",
    ]
    values = dict(zip(names, HEADER.unpack_from(data)[:7], strict=True))
    values.update(fields)
    meta_end = 32 + HEADER.unpack_from(data)[3]
    return build(
        values["kind"],
        data[32:meta_end],
        data[meta_end:],
        values["raw_length"],
        magic=values["magic"],
        version=values["version"],
        reserved=values["reserved"],
        meta_length=values["meta_length"],
        compressed_length=values["compressed_length"],
    )


SAMPLE_PAYLOAD = b"frame bytes " * 4 + bytes(range(16))
SAMPLE_META = {"pg": 7, "lsn": [10, 20]}
SAMPLE_NAME = "pg-7/log/00000010.aubk"


def sample() -> bytes:
    return encode_object(KIND_LOG, SAMPLE_PAYLOAD, SAMPLE_META)


def corrupt(data: bytes, expected_kind: int | None = None) -> BackupCorruptError:
    with pytest.raises(BackupCorruptError) as raised:
        decode_object(data, SAMPLE_NAME, expected_kind)
    assert raised.value.name == SAMPLE_NAME
    assert SAMPLE_NAME in str(raised.value)
    assert isinstance(raised.value, CorruptionError)
    return raised.value


# --- stores: the contract, on every store ----------------------------------------------

STORE_KINDS = ["local", "memory", "fsspec-memory", "fsspec-file", "fsspec-s3"]
OBJECT_STORES = ("fsspec-memory", "fsspec-s3")


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BackupStore]:
    if kind == "fsspec-s3":
        yield FsspecStore(request.getfixturevalue("s3_url"))
    elif kind == "local":
        yield LocalFolderStore(tmp_path / "backups")
    elif kind == "memory":
        yield MemoryStore()
    elif kind == "fsspec-file":
        pytest.importorskip("fsspec")
        yield FsspecStore(f"file://{tmp_path}/backups")
    else:
        pytest.importorskip("fsspec")
        fsspec_store = FsspecStore(f"memory://test-{uuid.uuid4().hex}/prefix")
        yield fsspec_store
        with contextlib.suppress(FileNotFoundError):
            fsspec_store.filesystem.rm(fsspec_store.root, recursive=True)


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackupStore]:
    yield from make_store(request.param, tmp_path, request)


# Object stores (S3, and memory:// standing for one) have no folders.
@pytest.fixture(params=[kind for kind in STORE_KINDS if kind not in OBJECT_STORES])
def folder_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackupStore]:
    yield from make_store(request.param, tmp_path, request)


def test_round_trip_and_overwrite(store: BackupStore) -> None:
    store.put("a/b/one", b"first")
    assert store.get("a/b/one") == b"first"
    store.put("a/b/one", b"second, longer")
    assert store.get("a/b/one") == b"second, longer"
    store.put("empty", b"")
    assert store.get("empty") == b""
    large = os.urandom(1 << 20)
    store.put("large", large)
    assert store.get("large") == large


def test_list_is_sorted_and_filtered_by_prefix(store: BackupStore) -> None:
    names = ["pg-2/log/02", "pg-10/log/01", "pg-2/log/01", "pg-2/pages/01", "manifest", "pg-2x"]
    for name in names:
        store.put(name, name.encode())
    assert store.list() == sorted(names)
    assert store.list("pg-2/") == ["pg-2/log/01", "pg-2/log/02", "pg-2/pages/01"]
    assert store.list("pg-2") == ["pg-2/log/01", "pg-2/log/02", "pg-2/pages/01", "pg-2x"]
    assert store.list("pg-2/log/0") == ["pg-2/log/01", "pg-2/log/02"]
    assert store.list("pg-2/log/01") == ["pg-2/log/01"]
    assert store.list("pg-1") == ["pg-10/log/01"]
    assert store.list("nothing/") == []
    assert store.list("manifest/") == []


def test_exists_and_delete(store: BackupStore) -> None:
    store.put("x/y", b"1")
    assert store.exists("x/y")
    assert not store.exists("x")  # a folder is not an object
    assert not store.exists("x/z")
    store.delete("x/y")
    assert not store.exists("x/y")
    assert store.list() == []
    store.delete("x/y")  # missing is fine
    store.delete("never/was")


def test_missing_object_names_itself(store: BackupStore) -> None:
    with pytest.raises(BackupObjectMissingError) as raised:
        store.get("pg-1/log/9")
    assert raised.value.name == "pg-1/log/9"
    assert "pg-1/log/9" in str(raised.value)
    store.put("pg-1/log/8", b"x")
    with pytest.raises(BackupObjectMissingError):
        store.get("pg-1")  # a folder of objects
    store.delete("pg-1/log/8")
    with pytest.raises(BackupObjectMissingError):
        store.get("pg-1/log/8")


def test_a_name_is_never_both_an_object_and_a_folder(folder_store: BackupStore) -> None:
    store = folder_store
    store.put("a", b"object a")
    with pytest.raises(InvalidBackupNameError):
        store.put("a/b", b"under a file")
    with pytest.raises(InvalidBackupNameError):
        store.put("a/b/c", b"deeper under a file")
    store.put("f/g", b"object f/g")
    with pytest.raises(InvalidBackupNameError):
        store.put("f", b"over a folder")
    store.delete("f")  # a folder: not an object, nothing to delete
    assert store.list() == ["a", "f/g"]
    assert store.get("a") == b"object a"
    assert store.get("f/g") == b"object f/g"


BAD_NAMES = [
    ("", "empty"),
    ("/abs", "relative"),
    ("/", "relative"),
    ("a/", "empty part"),
    ("a//b", "empty part"),
    ("..", "'..'"),
    ("../escape", "'..'"),
    ("a/../../escape", "'..'"),
    (".", "'.'"),
    ("a/./b", "'.'"),
    ("a b", "' '"),
    ("a\\b", "'\\\\'"),
    ("..\\escape", "'\\\\'"),
    ("a:b", "':'"),
    ("a\x00b", "'\\x00'"),
    ("é", "'é'"),
    ("a\nb", "'\\n'"),
    ("a~tmp", "'~'"),
    ("x" * 513, "513 characters"),
    ("a/" + "x" * 256, "over 255"),
]


@pytest.mark.parametrize(("name", "reason"), BAD_NAMES, ids=[repr(n[:20]) for n, _ in BAD_NAMES])
def test_bad_names_raise_and_touch_nothing(
    store: BackupStore, name: str, reason: str, tmp_path: Path
) -> None:
    store.put("kept", b"k")
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    for operation in (
        lambda: store.put(name, b"data"),
        lambda: store.get(name),
        lambda: store.delete(name),
        lambda: store.exists(name),
    ):
        with pytest.raises(InvalidBackupNameError) as raised:
            operation()
        assert raised.value.name == name
        assert reason in raised.value.reason
        assert isinstance(raised.value, InvalidArgumentError)
        assert isinstance(raised.value, ValueError)
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before
    assert store.list() == ["kept"]


@pytest.mark.parametrize("name", [b"bytes", None, 7, Path("a")])
def test_names_are_str(store: BackupStore, name: Any) -> None:
    with pytest.raises(InvalidBackupNameError):
        store.put(name, b"x")
    with pytest.raises(InvalidBackupNameError):
        store.list(name)


def test_longest_names_are_accepted(store: BackupStore) -> None:
    longest = "/".join(["x" * 255, "y" * 255])  # 511 characters, parts at their limit
    assert len(longest) == 511
    store.put(longest, b"ok")
    name_512 = "z" * 255 + "/" + "w" * 255 + "q"
    with pytest.raises(InvalidBackupNameError):
        store.put(name_512, b"a part of 256 characters")
    exactly_512 = "/".join(["a" * 255, "b" * 254, "c"])
    assert len(exactly_512) == 512
    store.put(exactly_512, b"ok")
    assert store.get(longest) == b"ok"
    assert store.get(exactly_512) == b"ok"


@pytest.mark.parametrize(
    "prefix", ["/", "/a", "a//", "../", "../x", "a/../", "./", "a b", "a\\", "é", "x" * 513, b"a"]
)
def test_bad_list_prefixes_raise(store: BackupStore, prefix: Any) -> None:
    with pytest.raises(InvalidBackupNameError):
        store.list(prefix)


def test_list_ignores_foreign_files_in_a_local_folder(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path)
    store.put("a/object", b"x")
    (tmp_path / "a" / "notes~").write_bytes(b"editor backup")
    (tmp_path / "a" / "with space").write_bytes(b"not a name")
    (tmp_path / "bad folder").mkdir()
    (tmp_path / "bad folder" / "inside").write_bytes(b"not reachable by a name")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "a" / "object")
    assert store.list() == ["a/object"]
    assert store.remove_temporary_files() == []  # only its own temporary files
    assert (tmp_path / "a" / "notes~").exists()


# --- the local folder store: files, fsync, atomic replace, crashes ----------------------


def test_local_store_keeps_objects_as_files_under_a_created_folder(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "backups"
    store = LocalFolderStore(root)
    assert root.is_dir()
    store.put("pg-1/log/1", b"bytes")
    assert (root / "pg-1" / "log" / "1").read_bytes() == b"bytes"
    assert sorted(p.name for p in root.rglob("*")) == ["1", "log", "pg-1"]  # no temporary left
    assert LocalFolderStore(str(root)).get("pg-1/log/1") == b"bytes"  # reopened by str path


def test_local_store_on_a_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(BackupStoreUnavailableError):
        LocalFolderStore(tmp_path / "file")
    with pytest.raises(BackupStoreUnavailableError):
        LocalFolderStore(tmp_path / "file" / "below")


def test_local_store_rejects_unknown_durability(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        LocalFolderStore(tmp_path, durability="memory")
    assert list(tmp_path.iterdir()) == []


def record_sync_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source: Any, target: Any) -> None:
        events.append(("replace", str(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_put_syncs_the_file_then_renames_then_syncs_the_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalFolderStore(tmp_path)
    events = record_sync_events(monkeypatch)
    store.put("new/folder/object", b"data")
    target = str(tmp_path / "new" / "folder" / "object")
    kinds = [kind for kind, _ in events]
    # New folders are synced into their parents, the temporary file before the
    # rename, the object's folder after it.
    assert ("fsync", str(tmp_path)) in events
    assert ("fsync", str(tmp_path / "new")) in events
    replace_at = events.index(("replace", target))
    assert kinds[replace_at - 1] == "fsync"
    assert "~" in Path(events[replace_at - 1][1]).name  # the temporary file
    assert events[replace_at + 1] == ("fsync", str(tmp_path / "new" / "folder"))
    events.clear()
    store.put("new/folder/object", b"again")  # existing folders: one file sync, one folder sync
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    events.clear()
    store.delete("new/folder/object")
    assert events == [("fsync", str(tmp_path / "new" / "folder"))]


def test_os_durability_never_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = record_sync_events(monkeypatch)
    store = LocalFolderStore(tmp_path / "store", durability="os")
    store.put("a/b", b"x")
    store.delete("a/b")
    assert [kind for kind, _ in events] == ["replace"]


def test_failed_rename_keeps_the_old_object_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalFolderStore(tmp_path)
    store.put("pg-1/manifest", b"old")

    def failing_replace(source: Any, target: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        store.put("pg-1/manifest", b"new")
    monkeypatch.undo()
    assert store.get("pg-1/manifest") == b"old"
    assert sorted(p.name for p in (tmp_path / "pg-1").iterdir()) == ["manifest"]


def test_crash_between_temporary_write_and_rename_leaves_the_old_object(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path)
    store.put("pg-1/manifest", b"old")
    child = os.fork()
    if child == 0:  # the crashing writer: dies at the rename, no cleanup runs

        def die(source: Any, target: Any) -> None:
            os._exit(17)

        try:
            os.replace = die  # type: ignore[assignment]
            store.put("pg-1/manifest", b"new, fully written and synced")
        finally:
            os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 17  # it died exactly at the rename
    files = sorted(p.name for p in (tmp_path / "pg-1").iterdir())
    assert len(files) == 2 and "manifest" in files  # the temporary file is on disk
    assert store.list() == ["pg-1/manifest"]
    assert store.list("pg-1/") == ["pg-1/manifest"]
    assert store.get("pg-1/manifest") == b"old"
    removed = store.remove_temporary_files()
    assert len(removed) == 1 and removed[0].startswith("pg-1/") and "~" in removed[0]
    assert [p.name for p in (tmp_path / "pg-1").iterdir()] == ["manifest"]
    store.put("pg-1/manifest", b"new")  # the store works on after the crash
    assert store.get("pg-1/manifest") == b"new"


def test_readers_see_the_old_object_or_the_new_one(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path, durability="os")
    versions = [bytes([1]) * 65536, bytes([2]) * 131072]
    store.put("object", versions[0])
    seen: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(store.get("object"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_number in range(200):
            store.put("object", versions[round_number % 2])
    finally:
        done.set()
        reader.join()
    assert seen
    assert all(data in versions for data in seen)


@given(st.text(alphabet="ab./\\~ \x00:é", max_size=24))
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_name_never_leaves_the_root(tmp_path: Path, name: str) -> None:
    store = LocalFolderStore(tmp_path, durability="os")
    try:
        check_name(name)
    except InvalidBackupNameError:
        with pytest.raises(InvalidBackupNameError):
            store.exists(name)
        return
    path = store._path(name).resolve()
    assert path.is_relative_to(tmp_path.resolve())
    assert path.relative_to(tmp_path.resolve()).as_posix() == name


valid_names = st.lists(
    st.text(alphabet=NAME_ALPHABET, min_size=1, max_size=12).filter(lambda p: p not in (".", "..")),
    min_size=1,
    max_size=4,
).map("/".join)


@given(st.dictionaries(valid_names, st.binary(max_size=64), max_size=8))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_names_round_trip(tmp_path: Path, objects: dict[str, bytes]) -> None:
    root = tmp_path / uuid.uuid4().hex
    for store in (LocalFolderStore(root, durability="os"), MemoryStore()):
        stored: dict[str, bytes] = {}
        for name, data in objects.items():
            if any(
                other.startswith(name + "/") or name.startswith(other + "/") for other in stored
            ):
                with pytest.raises(InvalidBackupNameError):  # both 'a' and 'a/b' were drawn
                    store.put(name, data)
                continue
            store.put(name, data)
            stored[name] = data
        assert store.list() == sorted(stored)
        assert {name: store.get(name) for name in stored} == stored
        for name in stored:
            store.delete(name)
        assert store.list() == []


# --- open_store ------------------------------------------------------------------------


class HandMadeStore:
    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes:
        return b""

    def delete(self, name: str) -> None: ...

    def exists(self, name: str) -> bool:
        return False

    def list(self, prefix: str = "") -> list[str]:
        return []


def test_open_store_passes_stores_through(tmp_path: Path) -> None:
    for given_store in (MemoryStore(), LocalFolderStore(tmp_path), HandMadeStore()):
        assert open_store(given_store) is given_store


def test_open_store_maps_paths_and_file_urls_to_local_folders(tmp_path: Path) -> None:
    for target in (
        tmp_path / "p",
        str(tmp_path / "s"),
        f"file://{tmp_path}/u",
        f"FILE://{tmp_path}/v",
    ):
        opened = open_store(target)
        assert isinstance(opened, LocalFolderStore)
        assert opened.root.name == Path(str(target)).name
        assert opened.root.is_dir()
    relative_with_colon = open_store(str(tmp_path / "c:x"))
    assert isinstance(relative_with_colon, LocalFolderStore)


@pytest.mark.parametrize("target", [None, 7, b"/tmp/bytes", ["a"], "file://"])
def test_open_store_rejects_what_is_no_store(target: Any) -> None:
    with pytest.raises(ConfigurationError):
        open_store(target)


def test_without_fsspec_urls_are_unavailable_and_folders_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # an import of it now fails
    monkeypatch.setitem(sys.modules, "fsspec.core", None)
    with pytest.raises(BackupStoreUnavailableError, match="pip install fsspec") as raised:
        open_store("s3://bucket/backups")
    assert isinstance(raised.value, ConfigurationError)
    with pytest.raises(BackupStoreUnavailableError, match="pip install fsspec"):
        FsspecStore("memory://x")
    local = open_store(tmp_path)
    local.put("still/works", b"yes")
    assert local.get("still/works") == b"yes"


def test_open_store_gives_fsspec_stores_for_urls() -> None:
    pytest.importorskip("fsspec")
    opened = open_store(f"memory://test-{uuid.uuid4().hex}/backups")
    assert isinstance(opened, FsspecStore)
    opened.put("a/b", b"x")
    assert opened.list() == ["a/b"]


def test_fsspec_file_urls_are_served_by_a_local_folder_store(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    opened = FsspecStore(f"file://{tmp_path}/b")
    assert isinstance(opened.local, LocalFolderStore)
    opened.put("a/b", b"x")
    assert (tmp_path / "b" / "a" / "b").read_bytes() == b"x"


def test_fsspec_unknown_schemes_and_missing_backends_are_unavailable() -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(BackupStoreUnavailableError, match="nosuchscheme"):
        open_store("nosuchscheme://bucket")
    backends = {"s3": "s3fs", "gcs": "gcsfs", "abfs": "adlfs"}
    scheme = next(s for s, module in backends.items() if importlib.util.find_spec(module) is None)
    with pytest.raises(BackupStoreUnavailableError, match="backend"):
        open_store(f"{scheme}://bucket/prefix")


# --- backup objects: the format -----------------------------------------------------------


def test_layout_matches_the_specification() -> None:
    payload = b"abc" * 100
    data = encode_object(KIND_PAGES, payload, {"pg": 1})
    assert data[:4] == b"AUBK"
    magic, version, kind, meta_length, compressed_length, raw_length, reserved, checksum = (
        HEADER.unpack_from(data)
    )
    assert (magic, version, kind, reserved) == (MAGIC, 1, KIND_PAGES, 0)
    assert raw_length == len(payload)
    assert len(data) == 32 + meta_length + compressed_length
    assert msgpack.unpackb(data[32 : 32 + meta_length]) == {"pg": 1}
    assert lz4.block.decompress(data[32 + meta_length :], uncompressed_size=raw_length) == payload
    assert checksum == xxhash.xxh3_64_intdigest(data[:24] + data[32:])
    assert compressed_length < raw_length
    assert data == build_payload(payload, {"pg": 1}, KIND_PAGES)  # the independent writer agrees


def test_worked_example_of_the_format_document() -> None:
    documented = bytes.fromhex(
        "41 55 42 4b 01 00 03 00"
        "06 00 00 00 00 00 00 00"
        "00 00 00 00 00 00 00 00"
        "5e fc f7 ed 86 07 cf c0"
        "81 a3 76 64 6c 07"
    )
    assert encode_object(KIND_MANIFEST, b"", {"vdl": 7}) == documented
    assert decode_object(documented, "rounds/7", KIND_MANIFEST) == ({"vdl": 7}, b"")


@pytest.mark.parametrize("kind", [KIND_LOG, KIND_PAGES, KIND_HISTORY])
def test_round_trip_every_kind(kind: int) -> None:
    meta = {
        "pg": 3,
        "first_lsn": 1,
        "last_lsn": 2**64 - 1,
        "time": 1.5,
        "tag": b"\x00\xff",
        "n": None,
    }
    for payload in (b"", b"x", os.urandom(5000), bytes(100000)):
        assert decode_object(encode_object(kind, payload, meta), "o", kind) == (meta, payload)
    assert decode_object(encode_object(kind, bytearray(b"buffer"), {}), "o") == ({}, b"buffer")
    assert (
        decode_object(memoryview(encode_object(kind, memoryview(b"view"), {})), "o")[1] == b"view"
    )


def test_manifest_is_meta_only() -> None:
    meta = {"pgs": {"0": [1, 2]}, "nested": {"k": [1, "two", {"three": 3.0}]}}
    data = encode_object(KIND_MANIFEST, b"", meta)
    assert len(data) == 32 + len(msgpack.packb(meta))  # no LZ4 block for an empty payload
    assert decode_object(data, "manifest", KIND_MANIFEST) == (meta, b"")
    with pytest.raises(InvalidArgumentError, match="MANIFEST"):
        encode_object(KIND_MANIFEST, b"payload", meta)


@pytest.mark.parametrize(
    ("kind", "payload", "meta"),
    [
        (0, b"", {}),
        (5, b"", {}),
        (KIND_LOG, b"", []),
        (KIND_LOG, b"", {1: "int key"}),
        (KIND_LOG, b"", {"set": {1, 2}}),
        (KIND_LOG, b"", {"object": object()}),
        (KIND_LOG, b"", {"huge": 2**70}),
        (KIND_LOG, b"", {"tuple keys": {(1, 2): 3}}),  # packs, but would not read back
    ],
)
def test_encode_rejects_bad_arguments(kind: int, payload: bytes, meta: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        encode_object(kind, payload, meta)


def test_encode_enforces_size_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objects, "PAYLOAD_MAX_BYTES", 100)
    monkeypatch.setattr(objects, "META_MAX_BYTES", 10)
    encode_object(KIND_LOG, bytes(100), {"k": "v"})
    with pytest.raises(InvalidArgumentError, match="101 bytes"):
        encode_object(KIND_LOG, bytes(101), {})
    with pytest.raises(InvalidArgumentError, match="over the limit"):
        encode_object(KIND_LOG, b"", {"key": "longer value"})


def test_decode_rejects_an_unknown_expected_kind() -> None:
    with pytest.raises(InvalidArgumentError):
        decode_object(sample(), SAMPLE_NAME, 9)


# --- backup objects: one test per corruption shape ------------------------------------------


def test_truncation_at_every_cut_point() -> None:
    data = sample()
    for cut in range(len(data)):
        corrupt(data[:cut])


def test_appended_bytes() -> None:
    corrupt(sample() + b"\x00")


def test_every_flipped_bit() -> None:
    data = sample()
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        corrupt(bytes(flipped))


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_any_changed_bytes(data: st.DataObject) -> None:
    original = sample()
    changed = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(original) - 1))
        changed[position] = data.draw(st.integers(0, 255))
    if bytes(changed) != original:
        corrupt(bytes(changed))


def test_wrong_magic() -> None:
    assert "magic" in corrupt(reseal(sample(), magic=0x4B425542)).reason
    assert "magic" in corrupt(b"AUMT" + sample()[4:]).reason  # a metadata record, say


def test_newer_version_is_a_format_version_error() -> None:
    with pytest.raises(FormatVersionError) as raised:
        decode_object(reseal(sample(), version=2), SAMPLE_NAME)
    assert (raised.value.found, raised.value.expected) == (2, 1)
    assert SAMPLE_NAME in str(raised.value)


def test_version_zero() -> None:
    assert "version 0" in corrupt(reseal(sample(), version=0)).reason


@pytest.mark.parametrize("kind", [0, 5, 0xFFFF])
def test_unknown_kind(kind: int) -> None:
    assert "unknown kind" in corrupt(reseal(sample(), kind=kind)).reason


def test_kind_other_than_expected() -> None:
    assert "expected PAGES" in corrupt(sample(), expected_kind=KIND_PAGES).reason
    decode_object(sample(), SAMPLE_NAME, KIND_LOG)


def test_reserved_not_zero() -> None:
    assert "reserved" in corrupt(reseal(sample(), reserved=1)).reason


def test_lengths_that_do_not_add_up() -> None:
    _, _, _, meta_length, compressed_length, _, _, _ = HEADER.unpack_from(sample())
    corrupt(reseal(sample(), meta_length=meta_length + 1))
    corrupt(reseal(sample(), compressed_length=compressed_length - 1))
    # the same total, split differently: meta and block no longer parse
    corrupt(reseal(sample(), meta_length=meta_length + 1, compressed_length=compressed_length - 1))
    corrupt(reseal(sample(), meta_length=meta_length - 1, compressed_length=compressed_length + 1))


def test_raw_length_off_by_one() -> None:
    raw_length = len(SAMPLE_PAYLOAD)
    assert "decompresses to" in corrupt(reseal(sample(), raw_length=raw_length + 1)).reason
    assert "decompress" in corrupt(reseal(sample(), raw_length=raw_length - 1)).reason


def test_raw_length_beyond_what_the_block_can_hold() -> None:
    compressed_length = HEADER.unpack_from(sample())[4]
    too_long = 255 * compressed_length + 1
    assert "cannot hold" in corrupt(reseal(sample(), raw_length=too_long)).reason
    assert "over" in corrupt(reseal(sample(), raw_length=2**32 - 1)).reason


def test_compressed_length_beyond_the_lz4_bound() -> None:
    data = build(KIND_LOG, b"\x80", os.urandom(40), raw_length=1)
    assert "cannot hold" in corrupt(data).reason


def test_raw_length_zero_with_a_block_and_the_reverse() -> None:
    corrupt(reseal(sample(), raw_length=0))
    corrupt(build(KIND_LOG, b"\x80", b"", raw_length=10))


def test_meta_over_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    data = sample()
    monkeypatch.setattr(objects, "META_MAX_BYTES", 4)
    assert "meta length" in corrupt(data).reason


def test_manifest_with_a_payload() -> None:
    history = encode_object(KIND_HISTORY, b"history bytes", {})
    assert "MANIFEST" in corrupt(reseal(history, kind=KIND_MANIFEST)).reason


def test_bad_lz4_block_with_a_good_checksum() -> None:
    meta_bytes = msgpack.packb({})
    garbage = b"\xf0\xff\xff\xff" + bytes(27)  # a run of 780 literals in a 31-byte block
    assert (
        "does not decompress" in corrupt(build(KIND_LOG, meta_bytes, garbage, raw_length=64)).reason
    )


def test_block_shorter_than_its_raw_length() -> None:
    block = lz4.block.compress(b"abc", store_size=False)
    assert "decompresses to 3" in corrupt(build(KIND_LOG, b"\x80", block, raw_length=4)).reason


@pytest.mark.parametrize(
    ("meta_bytes", "reason"),
    [
        (msgpack.packb([1, 2]), "not a map"),
        (msgpack.packb(7), "not a map"),
        (b"\xc1", "not msgpack"),  # a byte msgpack never uses
        (msgpack.packb({}) + b"\x01", "not msgpack"),  # trailing data
        (b"\x81\xa1", "not msgpack"),  # a map cut short
        (msgpack.packb({1: "int key"}), "not a str"),
        (b"\x81\xa1k\xa2\xff\xfe", "not msgpack"),  # a str that is not UTF-8
    ],
)
def test_bad_meta_with_a_good_checksum(meta_bytes: bytes, reason: str) -> None:
    assert reason in corrupt(build(KIND_MANIFEST, meta_bytes)).reason


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.binary(max_size=2048) | st.builds(
    lambda chunk, count: chunk * count, st.binary(min_size=1, max_size=16), st.integers(1, 300)
)


@given(
    st.sampled_from([KIND_LOG, KIND_PAGES, KIND_HISTORY]),
    payloads,
    st.dictionaries(st.text(max_size=12), json_like, max_size=6),
)
@settings(max_examples=100, deadline=None)
def test_random_objects_round_trip(kind: int, payload: bytes, meta: dict[str, Any]) -> None:
    data = encode_object(kind, payload, meta)
    assert decode_object(data, "random", kind) == (meta, payload)
    assert data == build_payload(payload, meta, kind)


# --- retention -----------------------------------------------------------------------------


def test_expired_takes_names_strictly_before_the_horizon_except_kept() -> None:
    objects = [("c", 30.0), ("a", 10.0), ("b", 20.0), ("d", 40.0), ("keep-me", 5.0)]
    snapshot = list(objects)
    assert expired(objects, horizon=30.0, keep={"keep-me"}) == ["a", "b"]
    assert expired(objects, horizon=30.0, keep=set()) == ["keep-me", "a", "b"]
    assert expired(objects, horizon=0.0, keep=set()) == []
    assert expired(objects, horizon=math.inf, keep={"a"}) == ["keep-me", "b", "c", "d"]
    assert expired([], horizon=100.0, keep=set()) == []
    assert objects == snapshot  # pure


def test_expired_orders_by_time_then_name() -> None:
    objects = [("z", 1.0), ("y", 1.0), ("x", 0.5)]
    assert expired(objects, horizon=2.0, keep=set()) == ["x", "y", "z"]


def test_expired_uses_the_newest_time_of_a_repeated_name() -> None:
    assert expired([("a", 1.0), ("a", 50.0)], horizon=10.0, keep=set()) == []
    assert expired([("a", 50.0), ("a", 1.0)], horizon=10.0, keep=set()) == []
    assert expired([("a", 1.0), ("a", 2.0)], horizon=10.0, keep=set()) == ["a"]


def test_expired_never_takes_unknown_times() -> None:
    nan = math.nan
    assert expired([("a", nan), ("b", 1.0)], horizon=10.0, keep=set()) == ["b"]
    assert expired([("a", 1.0), ("a", nan)], horizon=10.0, keep=set()) == []
    assert expired([("a", 1.0)], horizon=nan, keep=set()) == []
