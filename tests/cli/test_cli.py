"""The command line: every command on a small volume, its output and exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aurora_storage import Volume, cli
from aurora_storage.format import frames as log
from aurora_storage.protocol.node_storage import log_name


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_demo_passes(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "demo")
    assert status == 0, out
    assert "checks passed" in out
    for step in ("AZ az1 down", "writer crash", "backtrack", "point-in-time restore"):
        assert step in out


def test_status_text_json_prometheus(capsys: pytest.CaptureFixture[str], volume_path: Path) -> None:
    status, out, _ = run(capsys, "status", str(volume_path))
    assert status == 0
    assert "az3-b" in out and "VDL 30" in out and "backtrack window" in out and "restorable" in out
    status, out, _ = run(capsys, "status", str(volume_path), "--json")
    document = json.loads(out)
    assert document["vdl"] == 30 and len(document["nodes"]) == 6
    status, out, _ = run(capsys, "status", str(volume_path), "--prometheus")
    assert "aurora_volume_bytes_used" in out
    assert "aurora_backtrack_window_actual_seconds" in out
    assert 'aurora_node_up{az="az1",node="az1-a"} 1.0' in out


def test_verify_clean_then_corrupt(capsys: pytest.CaptureFixture[str], volume_path: Path) -> None:
    status, out, _ = run(capsys, "verify", str(volume_path))
    assert status == 0, out
    assert "0 problems" in out
    log_file = volume_path / "nodes" / "az2-b" / log_name(0)
    data = bytearray(log_file.read_bytes())
    data[len(data) // 3] ^= 0x40
    log_file.write_bytes(bytes(data))
    status, out, _ = run(capsys, "verify", str(volume_path))
    assert status == 1
    assert "az2-b" in out and "damaged" in out


def log_bytes(path: Path) -> dict[str, bytes]:
    return {
        str(file.relative_to(path)): file.read_bytes()
        for file in sorted((path / "nodes").rglob("pg-*"))
    }


def test_verify_reports_each_damage_per_node_and_file_and_changes_no_log(
    capsys: pytest.CaptureFixture[str], volume_path: Path
) -> None:
    """Damage that loading cuts as a torn tail or that peers mend by gossip still
    makes verify fail, named per node and file; verify neither cuts nor writes logs."""
    nodes = volume_path / "nodes"
    older = (nodes / "az2-b" / log_name(0)).read_bytes()
    volume = Volume.open(volume_path)
    for i in range(6):
        with volume.transaction() as tx:
            tx.write(i, 100, b"later")  # PG 0
    volume.close()
    (nodes / "az2-b" / log_name(0)).write_bytes(older)  # an older copy, put back
    torn = nodes / "az1-a" / log_name(0)
    size = torn.stat().st_size
    torn.write_bytes(torn.read_bytes() + b"\x01garbage after the last frame")
    first, second = nodes / "az1-b" / log_name(0), nodes / "az1-b" / log_name(1)
    first_data, second_data = first.read_bytes(), second.read_bytes()
    first.write_bytes(second_data)  # two PGs' logs swapped
    second.write_bytes(first_data)
    duplicated = nodes / "az2-a" / log_name(1)
    data = duplicated.read_bytes()
    frame_size = log.decode_frame(data, 4096).size
    duplicated.write_bytes(data[:frame_size] + data)  # its first frame twice
    before = log_bytes(volume_path)
    status, out, _ = run(capsys, "verify", str(volume_path))
    assert status == 1, out
    assert f"az1-a: {log_name(0)}: torn tail at byte {size}" in out and "would be cut" in out
    assert f"az1-b: {log_name(0)}: misplaced file at byte 0: holds frames of PG 1" in out
    assert f"az1-b: {log_name(1)}: misplaced file at byte 0: holds frames of PG 0" in out
    assert f"az2-a: {log_name(1)}: duplicate frame at byte {frame_size}" in out
    assert f"az2-b: {log_name(0)}: behind its peers: 6 frames" in out
    assert not any(line.startswith("problem: az3") for line in out.splitlines())
    assert log_bytes(volume_path) == before, "verify changed a log"
    reopened = Volume.open(volume_path)  # and the volume still reads right
    for i in range(6):
        assert reopened.read_page(i)[100:105] == b"later"
    reopened.close()


def test_dump(capsys: pytest.CaptureFixture[str], volume_path: Path) -> None:
    status, out, _ = run(capsys, "dump", str(volume_path), "--page", "3")
    assert status == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("lsn")
    assert all("\t3\t" in line for line in lines[1:]) and len(lines) >= 2
    status, out, _ = run(capsys, "dump", str(volume_path), "--lsn", "5:7")
    assert [line.split("\t")[0] for line in out.strip().splitlines()[1:]] == ["5", "6", "7"]


def test_backtrack_and_restore(
    capsys: pytest.CaptureFixture[str], volume_path: Path, tmp_path: Path
) -> None:
    status, out, err = run(capsys, "backtrack", str(volume_path), "--to=now")
    assert status == 0, err
    assert "last visible commit LSN" in out
    from aurora_storage.backup import BackupCatalog
    from aurora_storage.backup.store import open_store

    _, latest = BackupCatalog(open_store(str(tmp_path / "backup"))).window()
    status, out, err = run(
        capsys,
        "restore",
        str(tmp_path / "backup"),
        "--to",
        str(latest),
        "--into",
        str(tmp_path / "copy"),
    )
    assert status == 0, err
    restored = Volume.open(tmp_path / "copy")
    assert restored.read_page(13)[:9] == b"value 029"
    restored.close()


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "/nonexistent/volume"],
        ["verify", "/nonexistent/volume"],
        ["restore", "/nonexistent/backup", "--to", "now", "--into", "/tmp/never"],
    ],
)
def test_bad_paths_print_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    status, _, err = run(capsys, *argv)
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("aurora-storage: ")
    assert "Traceback" not in err


def test_bad_times(capsys: pytest.CaptureFixture[str], volume_path: Path) -> None:
    status, _, err = run(capsys, "backtrack", str(volume_path), "--to", "yesterday-ish")
    assert status == 1 and "cannot read time" in err
    status, _, err = run(capsys, "backtrack", str(volume_path), "--to", "+5h")
    assert status == 1 and "outside the window" in err


def test_help_on_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("demo", "status", "verify", "dump", "backtrack", "restore", "bench"):
        with pytest.raises(SystemExit) as caught:
            cli.main([command, "--help"])
        assert caught.value.code == 0
        assert "usage: aurora-storage" in capsys.readouterr().out


def test_report_renders_a_table(tmp_path: Path) -> None:
    from aurora_storage import report

    document = {
        "generated_utc": "now",
        "rows": [
            {
                "workload": "w",
                "subject_unit": "rows",
                "subject_records_per_s": 2e6,
                "baseline_label": "sqlite",
                "baseline_records_per_s": 1e6,
                "ratio": 2.0,
                "goal": {"kind": "ratio_min", "value": 1.0},
                "met": True,
            }
        ],
    }
    text = report.render_markdown(document)
    assert "| w | 2.00 Mrows/s | sqlite | 1.00 Mrows/s | 2.00x | >= 1.00x | yes |" in text
