"""What users see of the API besides its behaviour: reprs, the status type, restore's
keywords, where errors live, and docs that cite only what the repository holds."""

from __future__ import annotations

import argparse
import inspect
import re
import typing
from pathlib import Path

import pytest

from aurora_storage import SimulatedClock, Volume, backup, cli, errors
from aurora_storage.backup.store import MemoryStore
from aurora_storage.status import (
    BacktrackStatus,
    BackupStatus,
    NodeStatus,
    PgStatus,
    VolumeStatus,
)

ROOT = Path(__file__).resolve().parents[2]


def test_volume_and_transaction_reprs(tmp_path: Path) -> None:
    volume = Volume.create(tmp_path / "v", durability="os")
    assert repr(volume) == (
        f"<Volume {str(tmp_path / 'v')!r} open: epoch 1, VDL 0, 0 PGs, durability os>"
    )
    tx = volume.transaction()
    tx.write(3, 0, b"a")
    tx.write(3, 8, b"b")
    assert repr(tx) == "<Transaction open: 2 records in 1 PGs>"
    tx.commit()
    assert repr(tx) == "<Transaction committed at LSN 2>"
    aborted = volume.transaction()
    aborted.write(1, 0, b"c")
    aborted.abort()
    assert repr(aborted) == "<Transaction ended: nothing committed>"
    volume.close()
    assert volume.closed
    assert repr(volume).endswith("closed: epoch 1, VDL 2, 1 PGs, durability os>")
    assert repr(Volume.create()).startswith("<Volume in memory open:")


def test_status_is_typed_and_its_keys_are_the_typed_ones() -> None:
    assert typing.get_type_hints(Volume.status)["return"] is VolumeStatus
    clock = SimulatedClock(1_700_000_000)
    volume = Volume.create(clock=clock, backtrack_window=60, backup=MemoryStore())
    with volume.transaction() as tx:
        tx.write(0, 0, b"x")
    assert volume.stage_backup()
    status = volume.status()
    typed = VolumeStatus.__required_keys__ | VolumeStatus.__optional_keys__
    assert set(status) == typed
    assert VolumeStatus.__optional_keys__ == {"backtrack", "backup"}
    assert set(status["nodes"][0]) == set(typing.get_type_hints(NodeStatus))
    assert set(status["pgs"][0]) == set(typing.get_type_hints(PgStatus))
    assert set(status["backtrack"]) == set(typing.get_type_hints(BacktrackStatus))
    assert set(status["backup"]) == set(typing.get_type_hints(BackupStatus))
    assert status["vdl"] == volume.vdl  # still a dict to callers
    plain = Volume.create().status()
    assert set(plain) == VolumeStatus.__required_keys__


def test_restore_takes_creates_keywords_by_name() -> None:
    create = inspect.signature(Volume.create).parameters
    restore = inspect.signature(Volume.restore).parameters
    from_backup = {"path", "page_size", "segment_size", "capacity", "backup"}
    for name, parameter in create.items():
        if name in from_backup or name.startswith("_"):  # private: restore's own use
            continue
        assert name in restore, f"Volume.restore lacks create's {name}"
        assert restore[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert restore[name].default == parameter.default, name
        assert restore[name].annotation == parameter.annotation, name
    assert not [p for p in restore.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    with pytest.raises(TypeError):
        Volume.restore(MemoryStore(), to=0, backup_retention=3)  # type: ignore[call-arg]


def test_restore_error_lives_with_the_other_errors() -> None:
    assert backup.RestoreError is errors.RestoreError
    assert issubclass(errors.RestoreError, errors.HistoryError)
    assert errors.RestoreError.__module__ == "aurora_storage.errors"


def text_files() -> list[Path]:
    """The repository's own text: sources, docs, the README, CI and build files."""
    found = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / ".ci" / "run"]
    for folder in ("aurora_storage", "docs", "benchmarks", "tests", "csrc"):
        found += [
            path
            for path in (ROOT / folder).rglob("*")
            if path.suffix in {".py", ".md", ".c", ".h", ".sh"} and ".venv" not in path.parts
        ]
    return found


def test_docs_cite_only_files_inside_the_repository() -> None:
    # A repository document: an upper-case top-level file (README), or one under docs/.
    cited = re.compile(r"(?<![\w/.-])((?:docs/[\w.-]+|[A-Z][A-Z_]*)\.md)\b")
    missing = []
    for path in text_files():
        for name in cited.findall(path.read_text(errors="replace")):
            if not any((base / name).exists() for base in (ROOT, path.parent, ROOT / "docs")):
                missing.append(f"{path.relative_to(ROOT)} cites {name}")
    assert not missing, missing


def test_the_readme_command_table_matches_the_parser() -> None:
    parser = cli.build_parser()
    commands = next(
        action.choices
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    rows = re.findall(r"^\| `([a-z]+)([^`]*)` \|", (ROOT / "README.md").read_text(), re.M)
    assert {name for name, _ in rows} == set(commands), "one README row per command"
    for name, usage in rows:
        known = {option for action in commands[name]._actions for option in action.option_strings}
        for option in re.findall(r"--[a-z-]+", usage):
            assert option in known, f"README: {name} {option} is not an option of the command"
