"""The shape of ``Volume.status()``: typed dictionaries, one per part, and their building.

``status()`` returns plain data (dicts, lists, numbers, str, None) that
``json.dumps`` writes as it is; these TypedDicts name every key and its type,
so a caller's type checker knows them and ``status()["vdl"]`` still works.
Times are float seconds on the volume's clock, durations float seconds,
sizes bytes. ``backtrack`` is present only when the volume has a backtrack
window, ``backup`` only when it has a backup store.
"""

from __future__ import annotations

from typing import Any, TypedDict


class NodeStatus(TypedDict):
    name: str  # az1-a, az1-b, ... az3-<letter>
    az: str
    placed: int  # the volume's PGs the placement puts a segment of on this node
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
    members: list[list[str]]  # its six members; two sets during a membership change
    membership_epoch: list[int]  # [volume epoch, sequence] of its last change; [0, 0]: none
    pgcl: int
    tail_lsn: int
    scls: dict[str, int]  # node name -> SCL
    unacknowledged_frames: int


class ChangeStatus(TypedDict):
    pg: int
    kind: str  # "repair" or "move"
    old: list[str]  # the members before
    new: list[str]  # the members after
    started: float  # on the volume's clock
    ready: bool  # the new members hold what a write quorum holds


class FleetStatus(TypedDict):
    nodes: int  # nodes of the fleet, those repairs added included
    added: list[str]  # nodes repairs added
    repair_after: float | None  # seconds; None: no repairs
    unreachable_since: dict[str, float]  # node -> since when, on the volume's clock
    changes: list[ChangeStatus]  # membership changes in progress
    repair_problems: list[str]  # why the last repairs could not start


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
    fleet: FleetStatus
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


# --- building it ---------------------------------------------------------------------


def node_status(node: Any, up: bool, placed: int = 0) -> NodeStatus:
    """One storage node (protocol/node.py) as status() shows it."""
    disk_bytes = 0
    if node.disk is not None and not node.failed:
        disk_bytes = sum(node.disk.size(name) for name in node.disk.list())
    segments = node.segments.values()
    return {
        "name": node.name,
        "az": node.az,
        "placed": placed,
        "up": up,
        "failed": node.failed,
        "suspect": node.suspect or any(segment.suspect for segment in segments),
        "problems": node.problems(),
        "epoch": node.epoch,
        "segments": len(node.segment_ids()),  # awake or asleep
        "memory_bytes": sum(segment.bytes_used() for segment in segments),
        "shared_bytes": sum(segment.shared_bytes() for segment in segments),
        "disk_bytes": disk_bytes,
    }


def pg_status(pg: Any, membership: Any) -> PgStatus:
    """One protection group (protocol/protection_group.py) as the writer knows it, with
    its membership (protocol/placement.py)."""
    return {
        "pg": pg.pg_id,
        "members": [list(members) for members in membership.member_sets],
        "membership_epoch": list(membership.epoch),
        "pgcl": pg.pgcl,
        "tail_lsn": pg.tail_lsn,
        "scls": {node: pg.scls.get(node, 0) for node in pg.quorum.members},
        "unacknowledged_frames": len(pg.outstanding),
    }


def fleet_status(volume: Any) -> FleetStatus:
    """The fleet, its changes in progress and the repair policy (protocol/membership.py)."""
    return {
        "nodes": len(volume.placement.fleet),
        "added": list(volume.placement.added),
        "repair_after": volume.repair_after,
        "unreachable_since": dict(sorted(volume._down_since.items())),
        "changes": [
            {
                "pg": change.pg_id,
                "kind": change.kind,
                "old": list(change.old),
                "new": list(change.new),
                "started": change.started,
                "ready": volume._ready(change),
            }
            for _, change in sorted(volume._changes.items())
        ],
        "repair_problems": list(volume.repair_problems),
    }


def backtrack_status(volume: Any) -> BacktrackStatus:
    earliest, latest = volume.backtrack_window
    return {
        "window_target_seconds": volume.options.backtrack_window,
        "window_actual_seconds": latest - earliest,
        "earliest": earliest,
        "latest": latest,
        "change_records_stored": len(volume._window_commits),
        "change_bytes_stored": volume._window_bytes,
        "budget_bytes": volume.options.backtrack_budget,
    }


def volume_status(volume: Any) -> VolumeStatus:
    """Everything status() reports of an open volume (the caller holds its lock)."""
    placed = volume.placement.load(volume.pgs)
    nodes = [
        node_status(node, volume.cluster.is_up(name), placed.get(name, 0))
        for name, node in volume.nodes.items()
    ]
    # Memory of the page images replicas share (a restore's), counted once: every
    # block some segment still borrows, whole, whatever replicas did since.
    blocks = {
        id(block.obj): block.nbytes
        for node in volume.nodes.values()
        for segment in node.segments.values()
        for block in segment.page_log.shared_blocks()
    }
    shared_bytes = sum(blocks.values())
    in_memory = all(node.disk is None for node in volume.nodes.values())
    geometry = volume.geometry
    result: VolumeStatus = {
        "path": volume.path,
        "epoch": volume.epoch,
        "page_size": geometry.page_size,
        "pages_per_pg": geometry.pages_per_pg,
        "capacity_bytes": geometry.page_count * geometry.page_size,
        "durability": volume.options.durability,
        "allocated_lsn": volume.allocated_lsn,
        "vcl": volume.vcl,
        "vdl": volume.vdl,
        "pg_count": len(volume.pgs),
        "nodes": nodes,
        "fleet": fleet_status(volume),
        "pgs": [
            pg_status(pg, volume.placement.membership(pg.pg_id))
            for pg in sorted(volume.pgs.values(), key=lambda pg: pg.pg_id)
        ],
        "bytes_used": sum(node["disk_bytes"] or node["memory_bytes"] for node in nodes)
        + (shared_bytes if in_memory else 0),
        "shared_bytes": shared_bytes,
        "truncations": [list(truncation) for truncation in volume.truncations],
        "history_version": volume.history.current.version,
        "in_doubt": [lsn for lsn in volume._in_doubt if lsn > volume.vdl],
        "degraded": volume._degraded,
        "readonly": volume.readonly,
        "backtrack_in_doubt": volume._history_in_doubt,
    }
    if volume.options.backtrack_window:
        result["backtrack"] = backtrack_status(volume)
    backup = volume._backup_status()
    if backup is not None:
        result["backup"] = backup
    return result
