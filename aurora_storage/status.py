"""The shape of ``Volume.status()``: typed dictionaries, one per part.

``status()`` returns plain data (dicts, lists, numbers, str, None) that
``json.dumps`` writes as it is; these TypedDicts name every key and its type,
so a caller's type checker knows them and ``status()["vdl"]`` still works.
Times are float seconds on the volume's clock, durations float seconds,
sizes bytes. ``backtrack`` is present only when the volume has a backtrack
window, ``backup`` only when it has a backup store.
"""

from __future__ import annotations

from typing import TypedDict


class NodeStatus(TypedDict):
    name: str  # az1-a .. az3-b
    az: str
    up: bool  # the writer can reach it
    failed: str  # why the node stopped (a disk error, a failed load); empty while it runs
    suspect: bool  # catching up with its peers: it does not vote yet
    epoch: int
    segments: int
    memory_bytes: int
    shared_bytes: int  # page images it shares with other replicas (a restore's)
    disk_bytes: int  # 0 for a node without a disk
    problems: list[str]  # what its load found, per file (StorageNode.problems)


class PgStatus(TypedDict):
    pg: int
    pgcl: int
    tail_lsn: int
    scls: dict[str, int]  # node name -> SCL
    unacknowledged_frames: int


class BacktrackStatus(TypedDict):
    window_target_seconds: float  # BacktrackWindowTarget
    window_actual_seconds: float  # BacktrackWindowActual
    earliest: float  # the earliest time a backtrack reaches now
    latest: float
    change_records_stored: int  # BacktrackChangeRecordsStored
    change_bytes_stored: int
    budget_bytes: int  # 0: no limit


class _BackupStatusBase(TypedDict):
    store: str
    retention_days: float
    staging_interval_seconds: float
    earliest_restorable: float | None  # None until the first staging round is recorded
    latest_restorable: float | None
    last_error: str  # why the last staging round failed; empty after a good one


class BackupStatus(_BackupStatusBase, total=False):
    # The writer's staging (absent on a read-only volume, which reads the store's catalog).
    staged_vdl: int
    staging: str  # "background" or "inline"
    pending_rounds: int


class _VolumeStatusBase(TypedDict):
    path: str | None
    epoch: int
    page_size: int
    pages_per_pg: int
    capacity_bytes: int
    durability: str
    allocated_lsn: int
    vcl: int
    vdl: int
    pg_count: int
    nodes: list[NodeStatus]
    pgs: list[PgStatus]
    bytes_used: int  # VolumeBytesUsed
    shared_bytes: int
    truncations: list[list[int]]  # [epoch, lo, hi] of each truncation range
    history_version: int
    in_doubt: list[int]  # CPLs of commits that are in doubt
    backtrack_in_doubt: float | None  # the target of a backtrack in doubt
    degraded: (
        str  # why the volume takes no writes (recovery short of a write quorum); "" if it does
    )
    readonly: bool  # opened with readonly=True


class VolumeStatus(_VolumeStatusBase, total=False):
    backtrack: BacktrackStatus  # only with a backtrack window
    backup: BackupStatus  # only with a backup store
