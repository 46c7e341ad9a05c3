"""The backup suite's core cases through ``s3://``, against a local S3 server.

conftest.py starts moto in server mode on the loopback address; the volumes
here are given a plain ``s3://bucket/backups`` URL, as a user gives one, and
fsspec's s3fs talks HTTP to the server. Staging, point-in-time restore,
retention and a damaged or missing object each run as test_restore.py runs
them on a memory store, and the bucket is read back with a separate boto3
client, so what S3 holds is checked, not only what the library believes.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_restore import PAGE, PAGES, START, assert_pages, commit_every, make, random_history

from aurora_storage import SimulatedClock, Volume, backup, cli
from aurora_storage.backup.store import FsspecStore, open_store
from aurora_storage.errors import (
    BackupCorruptError,
    BackupObjectMissingError,
    TimeOutsideWindowError,
)
from aurora_storage.format.objects import HISTORY_NAME, parse_log_name
from aurora_storage.sim import TimelineModel

PREFIX = "backups/"


def keys(client: Any, bucket: str, under: str = "") -> list[str]:
    """Object names in the bucket under ``backups/<under>``, as S3 lists them."""
    names: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=PREFIX + under
    ):
        names += [entry["Key"][len(PREFIX) :] for entry in page.get("Contents", [])]
    return sorted(names)


def test_staging_and_restores_through_s3(s3_url: str, s3_client: Any, s3_bucket: str) -> None:
    rng = random.Random(5)
    clock = SimulatedClock(START)
    volume = make(clock, s3_url, backtrack_window=3600)
    model = TimelineModel(START, PAGE)
    random_history(volume, model, rng, 24, gap_s=60)
    assert volume.stage_backup()
    stored = keys(s3_client, s3_bucket)
    assert HISTORY_NAME in stored
    assert any(name.startswith("log/") for name in stored)
    assert any(name.startswith("rounds/") for name in stored)
    earliest, latest = volume.restorable_window
    assert latest == clock.now()
    volume.close()
    for moment in (earliest, rng.uniform(earliest, latest)):
        restored = Volume.restore(s3_url, to=moment)
        assert_pages(restored, model.at(moment))
        restored.close()
    newest = Volume.restore(s3_url, to="latest")
    assert newest.restored_from is not None and newest.restored_from[0] == latest
    assert_pages(newest, model.at(latest))
    newest.close()


def test_a_volume_reopens_with_its_s3_backup_and_the_cli_restores_it(
    tmp_path: Path, s3_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(6)
    clock = SimulatedClock(START)
    path = tmp_path / "volume"
    volume = make(clock, s3_url, path)
    model = TimelineModel(START, PAGE)
    commit_every(volume, model, rng, 6, seconds=20)
    volume.close()
    # The reopened volume finds its backup URL in volume.meta and reads the catalog from S3.
    volume = Volume.open(path, clock=clock)
    first_earliest = volume.restorable_window[0]
    commit_every(volume, model, rng, 6, seconds=20)
    assert volume.stage_backup()
    earliest, latest = volume.restorable_window
    assert earliest == first_earliest and latest == clock.now()
    volume.close()

    status = cli.main(["restore", s3_url, "--to", "latest", "--into", str(tmp_path / "copy")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.startswith("restored to ")
    restored = Volume.open(tmp_path / "copy")
    assert_pages(restored, model.at(latest))
    restored.close()


def test_retention_deletes_old_objects_from_s3(
    monkeypatch: pytest.MonkeyPatch, s3_url: str, s3_client: Any, s3_bucket: str
) -> None:
    monkeypatch.setattr(backup, "SNAPSHOT_EVERY_BYTES", 1)
    clock = SimulatedClock(START)
    # A round every four hours: ten rounds, few requests.
    volume = make(
        clock, s3_url, backup_retention_days=1, backup_staging_interval=timedelta(hours=4)
    )
    model = TimelineModel(START, PAGE)
    rng = random.Random(11)
    commit_every(volume, model, rng, 40, seconds=3600)  # 40 hours, one commit an hour
    assert volume.stage_backup()
    logs_in_s3 = keys(s3_client, s3_bucket, "log/")
    assert keys(s3_client, s3_bucket, "pages/"), "page snapshots were staged"
    earliest, latest = volume.restorable_window
    # Retention keeps a day back to the round before it: rounds are 4 hours apart.
    assert earliest >= clock.now() - 28 * 3600, "restores older than a day were given up"
    volume.close()
    first_log = min(logs_in_s3, key=lambda name: parse_log_name(name)[1])
    assert parse_log_name(first_log)[1] > 1, "the first LOG objects were deleted"
    with pytest.raises(TimeOutsideWindowError):
        Volume.restore(s3_url, to=START + 3600)
    for moment in (earliest, latest):
        restored = Volume.restore(s3_url, to=moment)
        assert_pages(restored, model.at(moment))
        restored.close()


def test_a_damaged_or_missing_object_in_s3_is_named(
    s3_url: str, s3_client: Any, s3_bucket: str
) -> None:
    clock = SimulatedClock(START)
    volume = make(clock, s3_url)
    commit_every(volume, TimelineModel(START, PAGE), random.Random(3), 20, seconds=20)
    assert volume.stage_backup()
    volume.close()
    logs = keys(s3_client, s3_bucket, "log/pg-00000000/")
    assert len(logs) >= 3
    damaged = logs[1]
    data = bytearray(s3_client.get_object(Bucket=s3_bucket, Key=PREFIX + damaged)["Body"].read())
    data[len(data) // 2] ^= 0x01
    s3_client.put_object(Bucket=s3_bucket, Key=PREFIX + damaged, Body=bytes(data))
    with pytest.raises(BackupCorruptError) as corrupt:
        Volume.restore(s3_url, to=clock.now())
    assert corrupt.value.name == damaged
    s3_client.delete_object(Bucket=s3_bucket, Key=PREFIX + damaged)
    with pytest.raises(BackupObjectMissingError) as missing:
        Volume.restore(s3_url, to=clock.now())
    assert missing.value.name == damaged


def test_the_store_sees_what_others_changed_in_the_bucket(
    s3_url: str, s3_client: Any, s3_bucket: str
) -> None:
    """S3 is shared: another writer's puts and deletes show at once, however this
    process's filesystem object cached what it saw before."""
    store = open_store(s3_url)
    assert isinstance(store, FsspecStore)
    store.put("a/one", b"1")
    assert store.exists("a/one") and store.list("a/") == ["a/one"]
    s3_client.put_object(Bucket=s3_bucket, Key=PREFIX + "a/two", Body=b"2")
    s3_client.delete_object(Bucket=s3_bucket, Key=PREFIX + "a/one")
    assert store.list("a/") == ["a/two"]
    assert not store.exists("a/one")
    assert store.exists("a/two") and store.get("a/two") == b"2"
    with pytest.raises(BackupObjectMissingError):
        store.get("a/one")


def test_pages_beyond_the_first_pg_restore_from_s3(s3_url: str) -> None:
    """Every PG of the volume, not only the first, comes back from S3."""
    clock = SimulatedClock(START)
    volume = make(clock, s3_url)
    model = TimelineModel(START, PAGE)
    for page_no in range(PAGES):
        clock.advance(5)
        data = bytes([page_no + 1]) * 64
        with volume.transaction() as tx:
            tx.write(page_no, 128, data)
        model.commit(clock.now(), [(page_no, 128, data)])
    assert volume.stage_backup()
    volume.close()
    restored = Volume.restore(s3_url, to=clock.now())
    assert restored.status()["pg_count"] == PAGES // 4
    assert_pages(restored, model.at(clock.now()))
    restored.close()
