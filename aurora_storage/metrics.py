"""Prometheus metrics of a volume: a collector over ``Volume.status()``.

:class:`VolumeCollector` turns a volume's status into metric families with
prometheus_client, at each scrape: register it in any registry of a running
process, or serve it with :func:`start_http_server`. ``aurora-storage status
--prometheus`` (and ``--openmetrics``) prints the same families through
:func:`exposition`.

Names follow Aurora's CloudWatch metrics where one exists
(``VolumeBytesUsed`` is ``aurora_volume_bytes_used``, ``BacktrackWindowActual``
is ``aurora_backtrack_window_actual_seconds``), with the ``aurora_`` prefix.
Every family is a gauge; times are ``*_timestamp_seconds`` (Unix seconds on the
volume's clock), durations ``*_seconds``. A family appears once per
exposition, with all its samples (per node, per segment) together. Families
of a part the volume lacks (no backtrack window, no backup, no staging round
recorded yet) are left out rather than given made-up values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from .status import VolumeStatus
from .volume import Volume

NODE_LABELS = ["node", "az"]
SEGMENT_LABELS = ["pg", "node"]
PG_LABELS = ["pg"]

# (name, help, labels) of every family, in exposition order.
FAMILIES: tuple[tuple[str, str, list[str]], ...] = (
    ("aurora_volume_bytes_used", "Bytes stored by the volume (VolumeBytesUsed).", []),
    ("aurora_volume_capacity_bytes", "Bytes the volume can address.", []),
    ("aurora_vdl", "Volume durable LSN: reads see commits up to it.", []),
    ("aurora_vcl", "Volume complete LSN.", []),
    ("aurora_allocated_lsn", "Highest LSN the writer allocated.", []),
    ("aurora_epoch", "Volume epoch: each writer recovery raises it.", []),
    ("aurora_pg_count", "Protection groups written.", []),
    ("aurora_commits_in_doubt", "Commits that raised WriteQuorumError and are in doubt.", []),
    ("aurora_backtrack_in_doubt", "1 while a backtrack that raised is in doubt.", []),
    ("aurora_node_up", "1 while the storage node answers the writer.", NODE_LABELS),
    (
        "aurora_node_suspect",
        "1 while the node catches up with its peers (not voting).",
        NODE_LABELS,
    ),
    ("aurora_node_bytes", "Bytes a storage node stores (on disk, else in memory).", NODE_LABELS),
    ("aurora_pg_pgcl", "Protection group complete LSN.", PG_LABELS),
    ("aurora_segment_scl", "Segment complete LSN, as the writer last heard it.", SEGMENT_LABELS),
    (
        "aurora_backtrack_window_target_seconds",
        "Backtrack window asked for (BacktrackWindowTarget).",
        [],
    ),
    (
        "aurora_backtrack_window_actual_seconds",
        "Backtrack window reachable now (BacktrackWindowActual).",
        [],
    ),
    (
        "aurora_backtrack_change_records_stored",
        "Commits kept for backtrack (BacktrackChangeRecordsStored).",
        [],
    ),
    ("aurora_backtrack_earliest_timestamp_seconds", "Earliest time backtrack reaches.", []),
    ("aurora_backtrack_latest_timestamp_seconds", "Latest time backtrack reaches.", []),
    (
        "aurora_backup_earliest_restorable_timestamp_seconds",
        "Earliest time a point-in-time restore reaches.",
        [],
    ),
    (
        "aurora_backup_latest_restorable_timestamp_seconds",
        "Latest time a point-in-time restore reaches.",
        [],
    ),
    ("aurora_backup_retention_seconds", "How long the backup keeps what restores need.", []),
    ("aurora_backup_staged_vdl", "VDL of the last staging round recorded.", []),
    ("aurora_backup_pending_rounds", "Staging rounds waiting for the worker.", []),
    ("aurora_backup_last_round_failed", "1 when the last staging round failed.", []),
)
DAY_SECONDS = 86400.0


def _empty_families() -> dict[str, GaugeMetricFamily]:
    return {
        name: GaugeMetricFamily(
            name,
            text,
            labels=labels or None,
            unit="seconds" if name.endswith("_seconds") else "",
        )
        for name, text, labels in FAMILIES
    }


def families(status: VolumeStatus) -> list[GaugeMetricFamily]:
    """The metric families of one status, those with samples only."""
    found = _empty_families()

    def put(name: str, value: float, labels: list[str] | None = None) -> None:
        found[name].add_metric(labels or [], value)

    put("aurora_volume_bytes_used", status["bytes_used"])
    put("aurora_volume_capacity_bytes", status["capacity_bytes"])
    put("aurora_vdl", status["vdl"])
    put("aurora_vcl", status["vcl"])
    put("aurora_allocated_lsn", status["allocated_lsn"])
    put("aurora_epoch", status["epoch"])
    put("aurora_pg_count", status["pg_count"])
    put("aurora_commits_in_doubt", len(status["in_doubt"]))
    put("aurora_backtrack_in_doubt", int(status["backtrack_in_doubt"] is not None))
    for node in status["nodes"]:
        labels = [node["name"], node["az"]]
        put("aurora_node_up", int(node["up"]), labels)
        put("aurora_node_suspect", int(node["suspect"]), labels)
        put("aurora_node_bytes", node["disk_bytes"] or node["memory_bytes"], labels)
    for pg in status["pgs"]:
        put("aurora_pg_pgcl", pg["pgcl"], [str(pg["pg"])])
        for node_name, scl in pg["scls"].items():
            put("aurora_segment_scl", scl, [str(pg["pg"]), node_name])
    backtrack = status.get("backtrack")
    if backtrack is not None:
        put("aurora_backtrack_window_target_seconds", backtrack["window_target_seconds"])
        put("aurora_backtrack_window_actual_seconds", backtrack["window_actual_seconds"])
        put("aurora_backtrack_change_records_stored", backtrack["change_records_stored"])
        put("aurora_backtrack_earliest_timestamp_seconds", backtrack["earliest"])
        put("aurora_backtrack_latest_timestamp_seconds", backtrack["latest"])
    backup = status.get("backup")
    if backup is not None:
        earliest, latest = backup["earliest_restorable"], backup["latest_restorable"]
        if earliest is not None and latest is not None:  # None before the first round
            put("aurora_backup_earliest_restorable_timestamp_seconds", earliest)
            put("aurora_backup_latest_restorable_timestamp_seconds", latest)
        put("aurora_backup_retention_seconds", backup["retention_days"] * DAY_SECONDS)
        if "staged_vdl" in backup:  # the writer's staging (not on a read-only volume)
            put("aurora_backup_staged_vdl", backup["staged_vdl"])
            put("aurora_backup_pending_rounds", backup.get("pending_rounds", 0))
        put("aurora_backup_last_round_failed", int(bool(backup["last_error"])))
    return [family for family in found.values() if family.samples]


class VolumeCollector(Collector):
    """Collects a volume's metrics at each scrape: ``registry.register(VolumeCollector(vol))``.

    ``source`` is a :class:`Volume` (its ``status()`` is read at each scrape,
    under the volume's lock like any call) or a function returning a status.
    A closed volume yields no samples.
    """

    def __init__(self, source: Volume | Callable[[], VolumeStatus]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        source = self._source
        if callable(source):
            yield from families(source())
            return
        if source.closed:
            return
        yield from families(source.status())

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Every family this collector may yield, without samples: registering it
        reads no status."""
        yield from _empty_families().values()


def exposition(status: VolumeStatus, *, openmetrics: bool = False) -> bytes:
    """The Prometheus text format (or OpenMetrics) of one status."""
    registry = CollectorRegistry()
    registry.register(VolumeCollector(lambda: status))
    if openmetrics:
        return bytes(generate_openmetrics(registry))  # type: ignore[no-untyped-call]
    return bytes(generate_latest(registry))


def start_http_server(
    volume: Volume,
    port: int,
    addr: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
) -> tuple[Any, Any]:
    """Serves the volume's metrics on ``addr:port`` (``/metrics``) from a daemon thread.

    Registers a :class:`VolumeCollector` in ``registry`` (a new one by default;
    pass ``prometheus_client.REGISTRY`` to serve it beside the process's other
    metrics). Returns prometheus_client's (server, thread): ``server.shutdown()``
    stops it. Listens on the loopback address unless told otherwise.
    """
    if registry is None:
        registry = CollectorRegistry()
    registry.register(VolumeCollector(volume))
    server, thread = _start_http_server(port, addr, registry)
    return server, thread
