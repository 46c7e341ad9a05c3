"""Every public entry point turns a wrong argument into an InvalidArgumentError
subclass naming it, changes nothing, and refuses use after close the same way.

A wrong type is bad input like a wrong value (checks.py): never a bare
TypeError, never a silent conversion (True is not page 1, 1.5 is not an LSN,
"10" is not ten seconds).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aurora_storage import SimulatedClock, Volume
from aurora_storage.errors import (
    ConfigurationError,
    InvalidArgumentError,
    LsnOutOfRangeError,
    PageOutOfRangeError,
    UnknownNodeError,
    VolumeClosedError,
)

PAGE = 4096


def small(**options: Any) -> Volume:
    base: dict[str, Any] = {"page_size": PAGE, "segment_size": PAGE * 8, "capacity": PAGE * 64}
    base.update(options)
    return Volume.create(**base)


@pytest.mark.parametrize(
    "options",
    [
        {"page_size": "4096"},
        {"page_size": 4096.0},
        {"page_size": True},
        {"segment_size": None},
        {"capacity": "big"},
        {"lal": 1.5},
        {"lal": "10"},
        {"backtrack_window": "10"},
        {"backtrack_window": float("nan")},
        {"backtrack_window": True},
        {"backtrack_budget": 2.5},
        {"commit_timeout": "1"},
        {"commit_timeout": float("inf")},
        {"durability": 1},
        {"durability": "sometimes"},
        {"backend": "fortran"},
        {"backup_retention_days": "7"},
        {"backup_staging_interval": None},
        {"clock": "now"},
        {"transport": object()},
        {"disks": {"az1-a": None}},
    ],
)
def test_bad_create_options(options: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "volume"
    with pytest.raises(InvalidArgumentError):
        small(path=path, **options)
    assert not path.exists(), "a refused create writes nothing"


@pytest.mark.parametrize("path", [12345, b"bytes/path", "", "bad\x00path", ["a"]])
def test_bad_paths(path: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        small(path=path)
    with pytest.raises(InvalidArgumentError):
        Volume.open(path)


def test_good_option_types_are_taken() -> None:
    volume = small(backtrack_window=timedelta(hours=1), commit_timeout=2, lal=10_000)
    assert volume.options.backtrack_window == 3600.0
    assert isinstance(volume.options.commit_timeout, float)
    volume.close()


def test_bad_read_arguments_change_nothing() -> None:
    volume = small()
    with volume.transaction() as tx:
        tx.write(1, 0, b"one")
    for page_no in (True, False, 1.0, "1", None, -1, 64):
        with pytest.raises(PageOutOfRangeError):
            volume.read_page(page_no)  # type: ignore[arg-type]
    for lsn in (True, 1.5, "1", -1, volume.vdl + 1):
        with pytest.raises(LsnOutOfRangeError):
            volume.read_page(1, lsn=lsn)  # type: ignore[arg-type]
        with pytest.raises(LsnOutOfRangeError), volume.read_view(lsn):  # type: ignore[arg-type]
            pass
    assert volume._pinned == [], "a refused read view pins nothing"
    with volume.read_view(1) as pinned:
        assert pinned == 1 and type(pinned) is int
    assert volume.read_page(1)[:3] == b"one"
    volume.close()


def test_bad_names_and_waits() -> None:
    volume = small()
    for name in (1, None, "az9", ["az1-a"]):
        with pytest.raises(UnknownNodeError):
            volume.cluster.fail_node(name)  # type: ignore[arg-type]
    with pytest.raises(UnknownNodeError):
        volume.cluster.fail_az("az1-a")
    with pytest.raises(InvalidArgumentError):
        volume.cluster.partition("writer", "az1-a")
    for lsn in (True, 1.5, -1, "1"):
        with pytest.raises(InvalidArgumentError):
            volume.wait_durable(lsn)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        volume.wait_durable(0, timeout="soon")  # type: ignore[arg-type]
    assert all(volume.cluster.is_up(name) for name in volume.nodes)
    volume.close()


def test_bad_backtrack_target() -> None:
    clock = SimulatedClock(1_700_000_000.0)
    volume = small(clock=clock, backtrack_window=3600)
    for target in ("yesterday", None, True, [1]):
        with pytest.raises(InvalidArgumentError):
            volume.backtrack(to=target)  # type: ignore[arg-type]
    volume.close()


def test_everything_refuses_a_closed_volume(tmp_path: Path) -> None:
    clock = SimulatedClock(1_700_000_000.0)
    volume = small(
        path=tmp_path / "v", clock=clock, backtrack_window=3600, backup=str(tmp_path / "b")
    )
    volume.close()
    calls = [
        volume.status,
        volume.transaction,
        lambda: volume.read_page(0),
        lambda: volume.read_view().__enter__(),
        lambda: volume.backtrack(clock.now()),
        lambda: volume.backtrack_window,
        lambda: volume.restorable_window,
        volume.stage_backup,
        lambda: volume.wait_durable(0),
        lambda: volume.in_doubt,
        lambda: volume.cluster.fail_node("az1-a"),
        lambda: volume.cluster.restore_node("az1-a"),
        volume.cluster.heal,
    ]
    for call in calls:
        with pytest.raises(VolumeClosedError):
            call()
    volume.close()  # closing twice is fine


def test_configuration_errors_are_invalid_arguments() -> None:
    assert issubclass(ConfigurationError, InvalidArgumentError)
    assert issubclass(InvalidArgumentError, ValueError)


def test_more_bad_arguments(tmp_path: Path) -> None:
    from aurora_storage.backup.store import MemoryStore

    for target in ("", "   ", "bad\x00path"):
        with pytest.raises(InvalidArgumentError):
            small(backup=target)
    volume = small(backup=MemoryStore())
    for timeout in (-1, float("nan"), float("inf"), "1"):
        with pytest.raises(InvalidArgumentError):
            volume.stage_backup(timeout=timeout)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            volume.wait_durable(0, timeout=timeout)  # type: ignore[arg-type]
    for name in ("nope", None, 1):
        with pytest.raises(UnknownNodeError):
            volume.cluster.is_up(name)  # type: ignore[arg-type]
    store = MemoryStore()
    source = small(backup=store)
    with source.transaction() as tx:
        tx.write(1, 0, b"one")
    assert source.stage_backup()
    with pytest.raises(InvalidArgumentError):
        Volume.restore(store, to="latest", progress=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        Volume.restore(store, to="latest", path="bad\x00path")
    volume.close()
    source.close()
