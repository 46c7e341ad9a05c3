"""Metrics that parse: ``status --prometheus`` and ``--openmetrics`` read back with both of
prometheus_client's parsers, and the collector inside a running process."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from aurora_storage import SimulatedClock, Volume, cli, metrics
from aurora_storage.backup.store import MemoryStore

START = 1_796_178_220.0


@pytest.fixture
def volume_path(tmp_path: Path) -> Path:
    path = tmp_path / "volume"
    clock = SimulatedClock(START)
    volume = Volume.create(
        path,
        page_size=4096,
        segment_size=4096 * 8,
        capacity=4096 * 256,
        clock=clock,
        backtrack_window=3600,
        backup=str(tmp_path / "backup"),
        backup_staging_interval=30,
    )
    for i in range(30):
        clock.advance(10)
        with volume.transaction() as tx:
            tx.write(i * 3 % 40, 0, f"value {i:03d}".encode())
    assert volume.stage_backup()
    volume.close()
    return path


def exposition(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def by_name(families: Any) -> dict[str, Any]:
    found = list(families)
    counts = Counter(family.name for family in found)
    assert all(count == 1 for count in counts.values()), f"families twice: {counts}"
    return {family.name: family for family in found}


def samples(family: Any) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def check_families(families: dict[str, Any], status: dict[str, Any]) -> None:
    assert samples(families["aurora_vdl"]) == {(): status["vdl"]}
    # (Each status command opens the volume afresh: bytes may differ by a few between two.)
    assert samples(families["aurora_volume_bytes_used"])[()] > 0
    up = samples(families["aurora_node_up"])
    assert up == {(("az", n["az"]), ("node", n["name"])): 1.0 for n in status["nodes"]}
    node_bytes = samples(families["aurora_node_bytes"])
    assert len(node_bytes) == 6 and all(value > 0 for value in node_bytes.values())
    scls = samples(families["aurora_segment_scl"])
    assert len(scls) == 6 * status["pg_count"]
    backup = status["backup"]
    assert samples(families["aurora_backup_earliest_restorable_timestamp_seconds"]) == {
        (): backup["earliest_restorable"]
    }
    assert samples(families["aurora_backup_latest_restorable_timestamp_seconds"]) == {
        (): backup["latest_restorable"]
    }
    backtrack = status["backtrack"]
    assert samples(families["aurora_backtrack_window_target_seconds"]) == {(): 3600.0}
    assert samples(families["aurora_backtrack_change_records_stored"]) == {
        (): backtrack["change_records_stored"]
    }
    assert not [name for name in families if name.endswith("_time")], (
        "times are *_timestamp_seconds"
    )


def test_prometheus_text_parses_into_one_family_each(
    capsys: pytest.CaptureFixture[str], volume_path: Path
) -> None:
    document = json.loads(exposition(capsys, "status", str(volume_path), "--json"))
    text = exposition(capsys, "status", str(volume_path), "--prometheus")
    check_families(by_name(text_string_to_metric_families(text)), document)


def test_openmetrics_parses(capsys: pytest.CaptureFixture[str], volume_path: Path) -> None:
    document = json.loads(exposition(capsys, "status", str(volume_path), "--json"))
    text = exposition(capsys, "status", str(volume_path), "--openmetrics")
    assert text.endswith("# EOF\n")
    check_families(by_name(openmetrics_families(text)), document)


def test_a_volume_without_backup_or_backtrack(capsys: pytest.CaptureFixture[str]) -> None:
    volume = Volume.create()
    families = by_name(text_string_to_metric_families(metrics.exposition(volume.status()).decode()))
    assert "aurora_vdl" in families
    assert not [name for name in families if "backup" in name or "backtrack_window" in name]
    by_name(openmetrics_families(metrics.exposition(volume.status(), openmetrics=True).decode()))


def test_before_the_first_round_no_restorable_times() -> None:
    clock = SimulatedClock(START)
    volume = Volume.create(clock=clock, backup=MemoryStore(), backup_staging_interval=3600)
    status = volume.status()
    assert status["backup"]["latest_restorable"] is None
    families = by_name(text_string_to_metric_families(metrics.exposition(status).decode()))
    assert "aurora_backup_staged_vdl" in families
    assert not [name for name in families if "restorable" in name]


def test_in_doubt_commits_and_backtracks_are_counted() -> None:
    status = Volume.create().status()
    status["in_doubt"] = [7, 9]
    status["backtrack_in_doubt"] = START
    families = by_name(text_string_to_metric_families(metrics.exposition(status).decode()))
    assert samples(families["aurora_commits_in_doubt"]) == {(): 2.0}
    assert samples(families["aurora_backtrack_in_doubt"]) == {(): 1.0}


def test_the_collector_in_any_registry_reads_status_at_each_scrape() -> None:
    volume = Volume.create()
    first, second = CollectorRegistry(), CollectorRegistry()
    collector = metrics.VolumeCollector(volume)
    first.register(collector)
    second.register(metrics.VolumeCollector(volume))
    assert first.get_sample_value("aurora_vdl") == 0
    with volume.transaction() as tx:
        tx.write(5, 0, b"x")
    assert first.get_sample_value("aurora_vdl") == volume.vdl == 1
    assert second.get_sample_value("aurora_node_up", {"node": "az2-b", "az": "az2"}) == 1
    volume.cluster.fail_node("az2-b")
    assert second.get_sample_value("aurora_node_up", {"node": "az2-b", "az": "az2"}) == 0
    volume.close()
    assert first.get_sample_value("aurora_vdl") is None, "a closed volume has no samples"


def test_start_http_server_serves_the_volume_on_loopback() -> None:
    volume = Volume.create()
    with volume.transaction() as tx:
        tx.write(1, 0, b"y")
    server, thread = metrics.start_http_server(volume, 0)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        thread.join(timeout=10)
        volume.close()
    families = by_name(text_string_to_metric_families(text))
    assert samples(families["aurora_vdl"]) == {(): 1.0}
