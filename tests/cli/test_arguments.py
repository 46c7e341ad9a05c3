"""The command line's arguments as a user types them: each gives one line of error or
does what it says, and nothing fails half-way leaving a mess behind."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aurora_storage import Volume, __version__, cli
from aurora_storage.errors import VolumeNotFoundError

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = cli.main(list(argv))
    except SystemExit as exit_:  # argparse: usage errors, --help, --version
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--version")
    assert status == 0 and out.strip() == f"aurora-storage {__version__}"


def test_debug_anywhere_on_the_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing")
    for argv in (["--debug", "status", missing], ["status", missing, "--debug"]):
        with pytest.raises(VolumeNotFoundError):
            cli.main(argv)
    status, _, err = run(capsys, "status", missing)
    assert status == 1 and one_line(err)


def test_json_and_prometheus_are_exclusive(
    capsys: pytest.CaptureFixture[str], volume_path: Path
) -> None:
    status, out, err = run(capsys, "status", str(volume_path), "--json", "--prometheus")
    assert status == 2 and out == ""
    assert one_line(err) and "not allowed with argument" in err


def test_dump_lsn_forms(capsys: pytest.CaptureFixture[str], volume_path: Path) -> None:
    def lsns(*argv: str) -> list[str]:
        status, out, err = run(capsys, "dump", str(volume_path), *argv)
        assert status == 0, err
        return [line.split("\t")[0] for line in out.strip().splitlines()[1:]]

    assert lsns("--lsn", "5") == ["5"]
    assert lsns("--lsn", "28:") == ["28", "29", "30"]
    assert lsns("--lsn", ":2") == ["1", "2"]
    assert lsns("--lsn", "5:7", "--limit", "2") == ["5", "6"]
    assert lsns("--limit", "0") == [], "at most 0 records: none"
    for bad in ("abc", "7:5", "-1", "5:x"):
        status, out, err = run(capsys, "dump", str(volume_path), "--lsn", bad)
        assert status == 1 and out == "", bad
        assert one_line(err) and "LSN range" in err, err


@pytest.mark.parametrize("argv", [["--page", "256"], ["--page", "-1"], ["--limit", "-1"]])
def test_dump_out_of_range_is_one_line(
    capsys: pytest.CaptureFixture[str], volume_path: Path, argv: list[str]
) -> None:
    status, out, err = run(capsys, "dump", str(volume_path), *argv)
    assert status == 1 and out == ""
    assert one_line(err) and argv[1] in err, err


def test_dump_bad_numbers_are_one_line_usage_errors(
    capsys: pytest.CaptureFixture[str], volume_path: Path
) -> None:
    status, out, err = run(capsys, "dump", str(volume_path), "--page", "x")
    assert status == 2 and out == "" and one_line(err) and "invalid int value" in err


def test_relative_time_after_a_space(capsys: pytest.CaptureFixture[str], volume_path: Path) -> None:
    # -2h is before the volume was made: argparse must pass it on, the window refuses it.
    status, _, err = run(capsys, "backtrack", str(volume_path), "--to", "-2h")
    assert status == 1 and one_line(err)
    assert "outside the window" in err and "before it opens" in err
    assert len(ISO_UTC.findall(err)) == 3, err
    assert not re.search(r"\d{10}\.\d", err), "times print as ISO-8601, not Unix floats"
    status, _, err = run(capsys, "backtrack", str(volume_path), "--to", "+5h")
    assert status == 1 and "after it closes" in err


def test_window_ends_for_backtrack_and_restore(
    capsys: pytest.CaptureFixture[str], volume_path: Path, tmp_path: Path
) -> None:
    backup = str(tmp_path / "backup")
    status, out, err = run(
        capsys, "restore", backup, "--to", "latest", "--into", str(tmp_path / "a")
    )
    assert status == 0, err
    restored = Volume.open(tmp_path / "a")
    assert restored.read_page(13)[:9] == b"value 029"
    restored.close()
    status, out, err = run(
        capsys, "restore", backup, "--to", "earliest", "--into", str(tmp_path / "b")
    )
    assert status == 0, err
    assert ISO_UTC.search(out), out
    restored = Volume.open(tmp_path / "b")
    assert restored.read_page(13) == bytes(4096), "nothing was committed at creation"
    restored.close()
    status, out, err = run(capsys, "backtrack", str(volume_path), "--to", "earliest")
    assert status == 0, err
    assert "last visible commit LSN 0 at creation" in out
    status, out, err = run(capsys, "backtrack", str(volume_path), "--to", "latest")
    assert status == 0, err
    assert "last visible commit LSN 0" in out, "the history in effect now: the backtracked one"


def test_a_failed_restore_leaves_no_folder(
    capsys: pytest.CaptureFixture[str], volume_path: Path, tmp_path: Path
) -> None:
    backup = tmp_path / "backup"
    log_object = sorted(backup.glob("log/pg-*/*"))[-1]
    data = bytearray(log_object.read_bytes())
    data[len(data) // 2] ^= 0x01
    log_object.write_bytes(bytes(data))
    into = tmp_path / "new" / "copy"
    status, _, err = run(capsys, "restore", str(backup), "--to", "latest", "--into", str(into))
    assert status == 1 and one_line(err) and "corrupt" in err
    assert not (tmp_path / "new").exists(), "the folders the restore made are gone"
    empty = tmp_path / "empty"
    empty.mkdir()
    status, _, err = run(capsys, "restore", str(backup), "--to", "latest", "--into", str(empty))
    assert status == 1 and empty.is_dir() and not any(empty.iterdir())
    typo = tmp_path / "bakcup"
    status, _, err = run(capsys, "restore", str(typo), "--to", "now", "--into", str(tmp_path / "c"))
    assert status == 1 and one_line(err) and "no such folder" in err
    assert not typo.exists() and not (tmp_path / "c").exists()


def test_rebuild_missing(capsys: pytest.CaptureFixture[str], volume_path: Path) -> None:
    shutil.rmtree(volume_path / "nodes" / "az2-a")
    status, _, err = run(capsys, "backtrack", str(volume_path), "--to", "latest")
    assert status == 1 and one_line(err) and "az2-a" in err
    status, out, err = run(
        capsys, "backtrack", str(volume_path), "--to", "latest", "--rebuild-missing"
    )
    assert status == 0, err
    assert (volume_path / "nodes" / "az2-a").is_dir()
    status, out, err = run(capsys, "verify", str(volume_path))
    assert status == 0, out


def test_demo_refuses_an_existing_volume(
    capsys: pytest.CaptureFixture[str], volume_path: Path
) -> None:
    before = sorted(path.name for path in volume_path.iterdir())
    meta = (volume_path / "volume.meta").read_bytes()
    status, _, err = run(capsys, "demo", "--path", str(volume_path))
    assert status == 1 and one_line(err) and "volume" in err
    assert sorted(path.name for path in volume_path.iterdir()) == before
    assert (volume_path / "volume.meta").read_bytes() == meta


def test_a_closed_pipe_exits_quietly(volume_path: Path) -> None:
    """``aurora-storage status PATH | head -0``: the reader is gone before anything is written."""
    command = Path(sys.executable).parent / "aurora-storage"
    for argv in (["status", str(volume_path)], ["dump", str(volume_path)]):
        process = subprocess.Popen(
            [str(command), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # before the command can print its first line
        err = process.stderr.read().decode()
        status = process.wait(timeout=60)
        assert status == 0, err
        assert err == "", err
