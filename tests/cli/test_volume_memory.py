"""A volume remembers how it was made: where its backup goes and on what clock.

volume.meta records the backup folder (absolute) or URL with its fsspec
storage options, so a reopen from any folder keeps backing up; a store that
lived only in the creating process must be given again, and open says so.
The clock kind is recorded too, and the command line will not act with the
wall clock on a volume made on a simulated one unless told.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aurora_storage import SimulatedClock, Volume, cli
from aurora_storage.backup import BackupCatalog
from aurora_storage.backup.store import FsspecStore, MemoryStore, StoreLocation, open_store
from aurora_storage.errors import ConfigurationError

PAGE = 4096


def small(path: Path, **options: object) -> Volume:
    return Volume.create(path, page_size=PAGE, segment_size=PAGE * 8, capacity=PAGE * 64, **options)  # type: ignore[arg-type]


def test_a_relative_backup_folder_is_found_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    volume = small(tmp_path / "v", backup="backup")
    with volume.transaction() as tx:
        tx.write(1, 0, b"one")
    volume.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    reopened = Volume.open(tmp_path / "v")
    with reopened.transaction() as tx:
        tx.write(2, 0, b"two")
    reopened.close()
    assert not (elsewhere / "backup").exists()
    restored = Volume.restore(str(tmp_path / "backup"), to="latest")
    assert restored.read_page(2)[:3] == b"two"
    restored.close()


def test_an_fsspec_store_is_recorded_with_its_options(tmp_path: Path) -> None:
    store = FsspecStore("memory://recorded-backup", skip_instance_cache=True)
    volume = small(tmp_path / "v", backup=store)
    with volume.transaction() as tx:
        tx.write(1, 0, b"one")
    volume.close()
    reopened = Volume.open(tmp_path / "v")
    assert isinstance(reopened.backup_store, FsspecStore)
    assert reopened.backup_store.url == "memory://recorded-backup"
    assert reopened.backup_store.storage_options == {"skip_instance_cache": True}
    reopened.close()
    location = StoreLocation("memory://recorded-backup", {"skip_instance_cache": True})
    assert BackupCatalog(open_store(location)).window()[1] > 0


def test_a_store_of_the_process_must_be_given_again(tmp_path: Path) -> None:
    store = MemoryStore()
    volume = small(tmp_path / "v", backup=store)
    volume.close()
    with pytest.raises(ConfigurationError, match="give it again"):
        Volume.open(tmp_path / "v")
    reopened = Volume.open(tmp_path / "v", backup=store)
    assert reopened.backup_store is store
    reopened.close()
    looking = Volume.open(tmp_path / "v", readonly=True)
    assert "backup" not in looking.status()
    looking.close()


def test_the_command_line_asks_before_acting_on_a_simulated_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = SimulatedClock(1_700_000_000.0)
    volume = small(tmp_path / "v", clock=clock, backtrack_window=3600)
    with volume.transaction() as tx:
        tx.write(1, 0, b"one")
    volume.close()
    assert cli.main(["backtrack", str(tmp_path / "v"), "--to", "now"]) == 1
    assert "simulated clock" in capsys.readouterr().err
    # Told, it acts with the wall clock (the simulated times are long past).
    status = cli.main(["backtrack", str(tmp_path / "v"), "--to", "now", "--wall-clock"])
    assert status == 0
    assert "simulated clock" not in capsys.readouterr().err


def test_the_command_line_restores_with_storage_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = FsspecStore("memory://cli-backup", skip_instance_cache=True)
    volume = small(tmp_path / "v", backup=store)
    with volume.transaction() as tx:
        tx.write(1, 0, b"one")
    volume.close()
    argv = ["restore", "memory://cli-backup", "--to", "latest", "--into", str(tmp_path / "r")]
    status = cli.main([*argv, "--storage-option", "skip_instance_cache=true"])
    assert status == 0, capsys.readouterr().err
    restored = Volume.open(tmp_path / "r")
    assert restored.read_page(1)[:3] == b"one"
    restored.close()
    assert cli.main([*argv[:-1], str(tmp_path / "r2"), "--storage-option", "oops"]) == 1
    assert os.path.exists(tmp_path / "r") and not os.path.exists(tmp_path / "r2")
