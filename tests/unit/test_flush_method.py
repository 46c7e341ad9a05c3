"""Which flush serves a folder's file system (flush.choose_method), from mountinfo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aurora_storage.errors import InvalidArgumentError
from aurora_storage.native import flush

pytestmark = pytest.mark.skipif(flush._syncfs is None, reason="Linux only: syncfs")


def mountinfo_for(path: Path, kind: str, options: str) -> str:
    device = os.stat(path).st_dev
    here = f"{os.major(device)}:{os.minor(device)}"
    return (
        "22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n"
        f"25 1 {here} / / rw,relatime shared:1 - {kind} /dev/vdz {options}\n"
        "26 25 0:99 / /other rw - ext4 /dev/vdy rw\n"
    )


@pytest.mark.parametrize(
    ("kind", "options", "method"),
    [
        ("ext4", "rw,relatime", "writeback"),
        ("ext4", "rw,data=ordered", "writeback"),
        ("ext4", "rw,data=journal", "syncfs"),  # data goes through the journal
        ("xfs", "rw,attr2,inode64", "writeback"),
        ("btrfs", "rw,ssd,space_cache=v2", "syncfs"),  # copy on write: data needs metadata
        ("tmpfs", "rw", "syncfs"),
    ],
)
def test_the_method_follows_the_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, options: str, method: str
) -> None:
    monkeypatch.delenv("AURORA_STORAGE_FLUSH", raising=False)
    info = mountinfo_for(tmp_path, kind, options)
    assert flush.file_system_of(tmp_path, info) == (kind, options)
    assert flush.choose_method(tmp_path, info, flags=0) == method


def test_an_unknown_device_gets_syncfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AURORA_STORAGE_FLUSH", raising=False)
    info = "26 25 0:99 / /other rw - ext4 /dev/vdy rw\nmalformed line\n"
    assert flush.file_system_of(tmp_path, info) == ("", "")
    assert flush.choose_method(tmp_path, info, flags=0) == "syncfs"


def test_the_environment_forces_a_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = mountinfo_for(tmp_path, "ext4", "rw")
    for method in flush.METHODS:
        monkeypatch.setenv("AURORA_STORAGE_FLUSH", method)
        assert flush.choose_method(tmp_path, info) == method
    monkeypatch.setenv("AURORA_STORAGE_FLUSH", "fsync")
    with pytest.raises(InvalidArgumentError, match="AURORA_STORAGE_FLUSH"):
        flush.choose_method(tmp_path, info)


def test_the_poll_time_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AURORA_STORAGE_FLUSH_POLL_US", raising=False)
    assert flush.poll_time() == flush.POLL_US_DEFAULT
    monkeypatch.setenv("AURORA_STORAGE_FLUSH_POLL_US", "0")
    assert flush.poll_time() == 0
    assert flush.Flusher("each", "python").poll_us == 0
    for bad in ("-5", "soon", str(flush.POLL_US_MAX + 1)):
        monkeypatch.setenv("AURORA_STORAGE_FLUSH_POLL_US", bad)
        with pytest.raises(InvalidArgumentError, match="AURORA_STORAGE_FLUSH_POLL_US"):
            flush.poll_time()


EXTENTS_FL = 0x00080000  # a flag every ext4 file has, beside the one that matters


@pytest.mark.parametrize(
    ("options", "flags", "journaled"),
    [
        ("rw,data=journal", 0, True),
        ("rw,data=ordered", EXTENTS_FL, False),
        ("rw,relatime", flush.FS_JOURNAL_DATA_FL | EXTENTS_FL, True),  # chattr +j
        ("rw,relatime", None, True),  # flags that cannot be read rule nothing out
    ],
)
def test_data_that_goes_through_the_journal_is_detected(
    options: str, flags: int | None, journaled: bool
) -> None:
    assert flush.journals_data(options, flags) is journaled


@pytest.mark.parametrize("kind", ["ext4", "xfs"])
def test_a_folder_with_the_data_journal_flag_gets_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """sync_file_range writes nothing durable for a file whose data is journaled,
    and files inherit the flag from their folder."""
    monkeypatch.delenv("AURORA_STORAGE_FLUSH", raising=False)
    info = mountinfo_for(tmp_path, kind, "rw,relatime")
    assert flush.choose_method(tmp_path, info, flags=EXTENTS_FL) == "writeback"
    journaled = flush.FS_JOURNAL_DATA_FL | EXTENTS_FL
    assert flush.choose_method(tmp_path, info, flags=journaled) == "syncfs"


def test_the_flags_are_read_from_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Here, where chattr +j is not allowed, a new folder's flags are readable and lack
    the data-journal flag, so ext4 and XFS keep the writeback flush."""
    monkeypatch.delenv("AURORA_STORAGE_FLUSH", raising=False)
    kind, options = flush.file_system_of(tmp_path)
    flags = flush.inode_flags(tmp_path)
    if kind not in ("ext4", "xfs"):
        pytest.skip(f"{kind or 'an unknown file system'}: no writeback flush to keep")
    assert flags is not None and not flags & flush.FS_JOURNAL_DATA_FL
    descriptor = os.open(tmp_path, os.O_RDONLY)
    try:
        assert flush.inode_flags(descriptor) == flags
    finally:
        os.close(descriptor)
    expected = "syncfs" if "data=journal" in options.split(",") else "writeback"
    assert flush.choose_method(tmp_path) == expected


def test_one_node_folder_with_the_flag_makes_the_shared_flush_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six node folders on one ext4 file system, one of them journaling its data. The
    file system and flags are as ext4 and chattr +j would report them (the sandbox
    may not allow chattr): only syncfs serves every folder."""
    from aurora_storage import Volume

    monkeypatch.delenv("AURORA_STORAGE_FLUSH", raising=False)
    monkeypatch.setattr(flush, "file_system_of", lambda path, mountinfo=None: ("ext4", "rw"))
    journaled_folder = tmp_path / "v" / "nodes" / "az2-b"

    def flags_of(target: int | str | os.PathLike[str]) -> int | None:
        if isinstance(target, int) or Path(target) != journaled_folder:
            return EXTENTS_FL
        return flush.FS_JOURNAL_DATA_FL | EXTENTS_FL

    monkeypatch.setattr(flush, "inode_flags", flags_of)
    volume = Volume.create(tmp_path / "v", page_size=4096, segment_size=4096 * 8)
    methods = {name: node.disk.flush_method for name, node in volume.nodes.items()}  # type: ignore[union-attr]
    assert methods.pop("az2-b") == "syncfs"
    assert set(methods.values()) == {"writeback"}
    assert volume._group_sync
    assert volume._flusher is not None and volume._flusher.method == "syncfs"
    with volume.transaction() as tx:
        tx.write(1, 0, b"durable")
    volume.close()


def test_a_log_with_the_data_journal_flag_is_always_flushed_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log that has the flag itself (set on the file, or before its folder lost it)
    is fdatasynced whole at every writeback flush; a log without it only while its
    size is not durable."""
    from aurora_storage.runtime import disk as disk_module

    def flags_of(descriptor: int) -> int:
        journaled = os.readlink(f"/proc/self/fd/{descriptor}").endswith("journaled.log")
        return EXTENTS_FL | (flush.FS_JOURNAL_DATA_FL if journaled else 0)

    monkeypatch.setattr(disk_module, "inode_flags", flags_of)
    store = disk_module.RealDisk(tmp_path, "fsync")
    store.flush_method = "writeback"
    store.append("plain.log", b"first")
    store.append("journaled.log", b"first")
    for _ in range(2):
        marks = {}
        for name, _, generation, growths, whole in store.flush_targets(
            ["plain.log", "journaled.log"]
        ):
            marks[name] = whole
            store.flushed(name, generation, growths)
        store.append("plain.log", b"more")
        store.append("journaled.log", b"more")
    assert marks == {"plain.log": False, "journaled.log": True}
    store.close()
