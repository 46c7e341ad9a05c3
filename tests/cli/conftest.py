"""The volume the command-line tests run the commands on."""

from __future__ import annotations

from pathlib import Path

import pytest

from aurora_storage import Volume


@pytest.fixture
def volume_path(tmp_path: Path) -> Path:
    """A small volume on disk with backtrack and a backup in ``tmp_path/backup``:
    30 commits, page ``i % 16`` holding ``value <i>``, every commit staged."""
    path = tmp_path / "volume"
    volume = Volume.create(
        path,
        page_size=4096,
        segment_size=4096 * 8,
        capacity=4096 * 256,
        backtrack_window=3600,
        backup=str(tmp_path / "backup"),
        backup_staging_interval=0.001,
    )
    for i in range(30):
        with volume.transaction() as tx:
            tx.write(i % 16, 0, f"value {i:03d}".encode())
    assert volume.stage_backup()  # every commit restorable: close alone may leave the last out
    volume.close()
    return path
