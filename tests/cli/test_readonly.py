"""Looking never changes what is looked at: read-only opens and the tools built on them.

Volume.open(path, readonly=True) takes no lock, sets no epoch, annuls nothing,
stages nothing and writes no file; it works while a writer holds the volume.
status, verify and dump use it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aurora_storage import Volume, cli
from aurora_storage.errors import VolumeReadOnlyError

WRITER = textwrap.dedent(
    """
    import sys
    from aurora_storage import Volume
    volume = Volume.create(sys.argv[1], page_size=4096, segment_size=4096 * 8,
                           capacity=4096 * 256, backtrack_window=3600, backup=sys.argv[2])
    for i in range(40):
        with volume.transaction() as tx:
            tx.write(i % 20, 0, b"value %03d" % i)
    volume.stage_backup()
    print("ready", flush=True)
    sys.stdin.readline()  # holds the volume open until told
    with volume.transaction() as tx:
        tx.write(0, 0, b"after")
    print("committed", flush=True)
    sys.stdin.readline()
    volume.close()
    """
)


def digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = cli.main(list(argv))
    return status, capsys.readouterr().out


def test_tools_on_a_volume_another_process_holds_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, backup = tmp_path / "volume", tmp_path / "backup"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(backup)],
        cwd=tmp_path,  # not the checkout: "-c" would import the uncompiled source tree
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdin is not None and writer.stdout is not None
    try:
        assert writer.stdout.readline().strip() == "ready"
        before = digest(path)
        for _ in range(20):
            status, out = run(capsys, "status", str(path))
            assert status == 0 and "VDL 40" in out and "epoch 1," in out, out
            status, out = run(capsys, "verify", str(path))
            assert status == 0 and "0 problems" in out, out
            status, out = run(capsys, "dump", str(path), "--page", "3")
            assert status == 0 and len(out.splitlines()) == 3, out
        status, out = run(capsys, "status", str(path), "--json")
        assert status == 0 and '"vdl": 40' in out
        assert digest(path) == before, "a tool changed the volume's files"
        reader = Volume.open(path, readonly=True)
        assert reader.read_page(0)[:9] == b"value 020"
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "committed"
        assert reader.read_page(0)[:9] == b"value 020", "it shows what was durable at open"
        reader.refresh()
        assert reader.vdl == 41 and reader.read_page(0)[:5] == b"after"
        reader.close()
    finally:
        writer.stdin.write("\n")
        writer.stdin.close()
        writer.wait(30)
    assert writer.returncode == 0


def test_a_read_only_volume_refuses_every_change(tmp_path: Path) -> None:
    path = tmp_path / "volume"
    volume = Volume.create(
        path, page_size=4096, segment_size=4096 * 8, capacity=4096 * 64, backtrack_window=60
    )
    with volume.transaction() as tx:
        tx.write(1, 0, b"one")
    volume.close()
    before = digest(path)
    reader = Volume.open(path, readonly=True)
    changes = [
        reader.transaction,
        lambda: reader.backtrack(reader.backtrack_window[1]),
        reader.stage_backup,
        lambda: reader.cluster.fail_node("az1-a"),
        lambda: reader.cluster.restore_node("az1-a"),
        reader.cluster.heal,
        lambda: reader.cluster.partition(["writer"], ["az1-a"]),
    ]
    for change in changes:
        with pytest.raises(VolumeReadOnlyError):
            change()
    assert reader.read_page(1)[:3] == b"one"
    assert reader.status()["epoch"] == 1, "the epoch of the writer that made it"
    reader.close()
    assert digest(path) == before
    writer = Volume.open(path)  # a writer opens it as always afterwards
    assert writer.read_page(1)[:3] == b"one"
    writer.close()


def test_a_read_only_open_takes_the_durable_state_of_a_crashed_writer(tmp_path: Path) -> None:
    path = tmp_path / "volume"
    volume = Volume.create(path, page_size=4096, segment_size=4096 * 8, capacity=4096 * 64)
    for i in range(5):
        with volume.transaction() as tx:
            tx.write(i, 0, b"kept %d" % i)
    volume.simulate_crash()
    before = digest(path)
    for _ in range(3):
        reader = Volume.open(path, readonly=True)
        assert reader.vdl == 5
        assert [reader.read_page(i)[:6] for i in range(5)] == [b"kept %d" % i for i in range(5)]
        reader.close()
    assert digest(path) == before
