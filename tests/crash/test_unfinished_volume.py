"""A create or restore that fails or is killed leaves nothing that opens, and never
blocks a retry.

A new volume's folder holds a marker from its first write until it is whole
(volume.UNFINISHED_MARKER). Open refuses such a folder with
VolumeIncompleteError; a new create or restore into it clears it. A create or
restore that fails in process removes what it wrote.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from aurora_storage import SimulatedClock, Volume, backup
from aurora_storage import volume as volume_module
from aurora_storage.errors import (
    BackupStoreUnavailableError,
    InvalidArgumentError,
    StorageWriteError,
    VolumeExistsError,
    VolumeIncompleteError,
    VolumeInUseError,
)
from aurora_storage.runtime.folder import UNFINISHED_MARKER

PAGE = 4096
ROUNDS = 20 if os.environ.get("AURORA_STORAGE_SLOW") == "1" else 3


def small(path: Path, **options: object) -> Volume:
    return Volume.create(
        path,
        page_size=PAGE,
        segment_size=PAGE * 8,
        capacity=PAGE * 256,
        **options,  # type: ignore[arg-type]
    )


def backed_up(tmp_path: Path, pages: int = 64) -> tuple[str, float]:
    """A backup of a volume whose pages hold their own numbers; returns (store, time)."""
    clock = SimulatedClock(1_700_000_000.0)
    store = str(tmp_path / "backup")
    volume = small(tmp_path / "source", clock=clock, backup=store, durability="os")
    for first in range(0, pages, 16):
        clock.advance(1)
        with volume.transaction() as tx:
            for page_no in range(first, first + 16):
                tx.put_page(page_no, page_no.to_bytes(4, "little") * (PAGE // 4))
    clock.advance(1)
    assert volume.stage_backup()
    moment = clock.now()
    volume.close()
    return store, moment


def check_restored(volume: Volume, pages: int) -> None:
    for page_no in range(pages):
        assert volume.read_page(page_no)[:4] == page_no.to_bytes(4, "little"), page_no


def test_a_create_with_an_unusable_backup_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "volume"
    (tmp_path / "a-file").write_bytes(b"not a folder")
    with pytest.raises(BackupStoreUnavailableError):
        small(path, backup=str(tmp_path / "a-file"))
    assert not path.exists()
    volume = small(path, backup=str(tmp_path / "backup"))  # the corrected retry
    volume.close()
    Volume.open(path).close()


def test_a_failed_create_into_an_empty_folder_leaves_it_empty(tmp_path: Path) -> None:
    path = tmp_path / "volume"
    path.mkdir()
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(BackupStoreUnavailableError):
        small(path, backup=str(tmp_path / "a-file"))
    assert path.is_dir() and list(path.iterdir()) == []
    small(path).close()


def test_a_failed_restore_leaves_nothing_and_a_retry_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, moment = backed_up(tmp_path)
    path = tmp_path / "restored"
    real = backup.pg_images
    calls = 0

    def failing(*arguments, **keywords):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(5, "the store went away")
        return real(*arguments, **keywords)

    monkeypatch.setattr(backup, "pg_images", failing)
    with pytest.raises(OSError):
        Volume.restore(store, to=moment, path=path)
    assert not path.exists()
    monkeypatch.setattr(backup, "pg_images", real)
    restored = Volume.restore(store, to=moment, path=path)
    check_restored(restored, 64)
    restored.close()


def test_a_killed_restore_never_opens_and_a_retry_clears_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill runs no cleanup: the leftovers keep their marker."""
    store, moment = backed_up(tmp_path)
    path = tmp_path / "restored"

    def killed(*arguments, **keywords):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # stands for the process dying here

    def dead(volume: Volume) -> None:  # a dead process cleans nothing up but loses its lock
        volume._discard()
        volume._release_lock()

    monkeypatch.setattr(backup, "pg_images", killed)
    monkeypatch.setattr(Volume, "_discard_unfinished", dead)
    monkeypatch.setattr(volume_module, "remove_made", lambda made: None)
    with pytest.raises(KeyboardInterrupt):
        Volume.restore(store, to=moment, path=path)
    monkeypatch.undo()
    assert (path / UNFINISHED_MARKER).exists() and (path / "volume.meta").exists()
    with pytest.raises(VolumeIncompleteError):
        Volume.open(path)
    restored = Volume.restore(store, to=moment, path=path)
    check_restored(restored, 64)
    restored.close()
    assert not (path / UNFINISHED_MARKER).exists()
    reopened = Volume.open(path)
    check_restored(reopened, 64)
    reopened.close()


def test_an_unfinished_folder_with_other_files_is_not_cleared(tmp_path: Path) -> None:
    path = tmp_path / "volume"
    path.mkdir()
    (path / UNFINISHED_MARKER).write_bytes(b"")
    (path / "notes.txt").write_text("mine")
    with pytest.raises(VolumeExistsError):
        small(path)
    assert (path / "notes.txt").read_text() == "mine"


def test_a_held_volume_refuses_a_second_writer_and_starts_no_thread(tmp_path: Path) -> None:
    path = tmp_path / "volume"
    volume = small(path)
    threads = threading.active_count()
    for _ in range(5):
        with pytest.raises(VolumeInUseError):
            Volume.open(path)
    assert threading.active_count() == threads
    volume.close()


CHILD = textwrap.dedent(
    """
    import sys
    from aurora_storage import Volume
    store, moment, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    print("ready", flush=True)
    Volume.restore(store, to=moment, path=path, durability="fsync").close()
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_sigkill_during_restore(tmp_path: Path, round_number: int) -> None:
    """A real kill at a random moment: the folder opens whole or not at all."""
    rng = random.Random(4000 + round_number)
    store, moment = backed_up(tmp_path, pages=256)
    path = tmp_path / "restored"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, store, repr(moment), str(path)],
        cwd=tmp_path,  # not the checkout: "-c" would import the uncompiled source tree
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.0, 0.4))
    child.send_signal(signal.SIGKILL)
    output, _ = child.communicate()
    if path.exists() and (path / UNFINISHED_MARKER).exists():
        with pytest.raises(VolumeIncompleteError):
            Volume.open(path)
    elif path.exists() and (path / "volume.meta").exists():
        assert "done" in output or not (path / UNFINISHED_MARKER).exists()
        reopened = Volume.open(path)
        check_restored(reopened, 256)
        reopened.close()
    restored = Volume.restore(store, to=moment, path=tmp_path / "again")
    check_restored(restored, 256)
    restored.close()
    if not (path / "volume.meta").exists() or (path / UNFINISHED_MARKER).exists():
        retry = Volume.restore(store, to=moment, path=path)
        check_restored(retry, 256)
        retry.close()


def test_two_creates_into_one_folder_never_clear_a_finished_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B looks at the folder while A's create is unfinished (allowed: a marker and a
    lock), A finishes and commits, then B takes the lock: B must look again."""
    from aurora_storage.runtime import cluster as cluster_module
    from aurora_storage.runtime import folder

    path = tmp_path / "volume"
    a_paused, a_go, b_checked, b_go = (threading.Event() for _ in range(4))
    real_make_nodes, real_make_folders = cluster_module.make_nodes, folder.make_folders

    def make_nodes(*arguments, **keywords):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "A":
            a_paused.set()
            a_go.wait(10)
        return real_make_nodes(*arguments, **keywords)

    def make_folders(*arguments, **keywords):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "B":
            b_checked.set()
            b_go.wait(10)
        return real_make_folders(*arguments, **keywords)

    monkeypatch.setattr(cluster_module, "make_nodes", make_nodes)
    monkeypatch.setattr(folder, "make_folders", make_folders)
    outcome: dict[str, object] = {}

    def create_a() -> None:
        volume = small(path, durability="os")
        with volume.transaction() as tx:
            tx.write(0, 0, b"precious")
        volume.close()

    def create_b() -> None:
        try:
            small(path, durability="os").close()
            outcome["B"] = "created"
        except VolumeExistsError as error:
            outcome["B"] = error

    first = threading.Thread(target=create_a, name="A")
    first.start()
    assert a_paused.wait(10)
    second = threading.Thread(target=create_b, name="B")
    second.start()
    assert b_checked.wait(10)
    a_go.set()
    first.join(10)
    b_go.set()
    second.join(10)
    assert isinstance(outcome["B"], VolumeExistsError)
    monkeypatch.undo()
    volume = Volume.open(path)
    assert volume.read_page(0)[:8] == b"precious"
    volume.close()


def test_a_folder_that_cannot_hold_a_volume_gets_a_named_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(InvalidArgumentError):
        small(tmp_path / "a-file" / "volume")
    path = tmp_path / "volume"
    small(path).close()
    (path / "volume.lock").unlink()
    (path / "volume.lock").mkdir()
    with pytest.raises(StorageWriteError):
        Volume.open(path)
