"""Which flush serves a folder's file system (flush.choose_method), from mountinfo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aurora_storage import flush
from aurora_storage.errors import InvalidArgumentError

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
    assert flush.choose_method(tmp_path, info) == method


def test_an_unknown_device_gets_syncfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AURORA_STORAGE_FLUSH", raising=False)
    info = "26 25 0:99 / /other rw - ext4 /dev/vdy rw\nmalformed line\n"
    assert flush.file_system_of(tmp_path, info) == ("", "")
    assert flush.choose_method(tmp_path, info) == "syncfs"


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
