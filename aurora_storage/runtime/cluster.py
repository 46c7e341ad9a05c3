"""The embedded cluster: the storage nodes a volume runs, their wiring, fault controls.

:func:`make_nodes` builds one node per name of the fleet (placement.py), each
on its own disk (a folder under ``nodes/``, a given simulated disk, or none
in memory).
:class:`Cluster` is the volume's handle on them for tests and demos: a node
or an AZ fails (stops answering, keeping what it stored) or comes back (and
catches up by gossip), and links between endpoints can be cut and healed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..config import AZS, VolumeOptions, az_of
from ..errors import (
    AuroraStorageError,
    InvalidArgumentError,
    PlacementError,
    SegmentRepairNeededError,
    StorageWriteError,
    UnknownNodeError,
)
from ..native.flush import Flusher
from ..protocol.history import History
from ..protocol.node import StorageNode, failed_nodes
from ..protocol.placement import Placement
from ..protocol.ports import Disk
from ..protocol.protection_group import WRITE_QUORUM
from ..protocol.writer import Writer
from .disk import RealDisk
from .sync import group_syncer, node_syncer
from .transport import SimulatedTransport, Transport


def make_nodes(
    options: VolumeOptions,
    root: Path | None,
    volume_id: str,
    disks: dict[str, Disk] | None,
    placement: Placement,
) -> dict[str, StorageNode]:
    return {
        name: make_node(name, options, root, volume_id, disks, placement)
        for name in placement.fleet
    }


def make_node(
    name: str,
    options: VolumeOptions,
    root: Path | None,
    volume_id: str,
    disks: dict[str, Disk] | None,
    placement: Placement,
) -> StorageNode:
    """One node of the fleet, on its disk, with its own copy of the fleet: the
    memberships changes set it learns from its node.meta and from the writer
    (SetMembers), never ahead of what it made durable."""
    mode = "fsync" if options.durability == "fsync" else "os"
    disk: Disk | None = None
    if disks is not None:
        disk = disks[name]
    elif root is not None and options.durability != "memory":
        disk = RealDisk(root / "nodes" / name, mode)
    fleet = placement.fleet
    return StorageNode(
        name,
        az_of(name),
        options.geometry(),
        list(fleet),
        options.backend,
        disk,
        volume_id,
        options.durability,
        options.cache_bytes // len(fleet),
        Placement(placement.base, placement.added),
    )


def new_nodes(
    options: VolumeOptions,
    root: Path | None,
    volume_id: str,
    disks: dict[str, Disk] | None,
    history: History,
    placement: Placement,
) -> dict[str, StorageNode]:
    """The nodes of a new volume, each with its own copy of the first history written
    to its node.meta; StorageWriteError if fewer than a write quorum of some member
    set could write."""
    nodes = make_nodes(options, root, volume_id, disks, placement)
    for node in nodes.values():
        node.history = history.keyed(history.key)
        node.write_meta()  # a node that cannot write stops: failed says why
    written = [name for name, node in nodes.items() if not node.failed]
    if not placement.covers_write(written):
        raise StorageWriteError(
            f"node.meta of the new volume reached {len(written)} of {len(nodes)} nodes, "
            f"{placement.shortfall(written, WRITE_QUORUM)}{failed_nodes(nodes)}"
        )
    return nodes


class Cluster:
    """Failure control of the storage nodes, for tests and demos."""

    def __init__(self, volume: Any) -> None:
        self._volume = volume

    @property
    def nodes(self) -> dict[str, StorageNode]:
        nodes: dict[str, StorageNode] = self._volume.nodes
        return nodes

    def _names(self, name: str) -> list[str]:
        self._volume._check_open()
        self._volume._refuse_if_readonly("a node control")
        if not isinstance(name, str):
            raise UnknownNodeError(repr(name), [*self.nodes, *AZS])
        if name in self.nodes:
            return [name]
        members = [node.name for node in self.nodes.values() if node.az == name]
        if not members:
            raise UnknownNodeError(name, [*self.nodes, *AZS])
        return members

    def is_up(self, name: str) -> bool:
        if not isinstance(name, str) or name not in self.nodes:
            raise UnknownNodeError(repr(name) if not isinstance(name, str) else name, [*self.nodes])
        return name not in self._volume.transport.down

    def fail_node(self, name: str) -> None:
        """The node stops answering; what it stored stays on its disk."""
        for node_name in self._names(name):
            self._volume.transport.set_down(node_name, True)
        self._volume.note_reachability()  # the repair policy counts from now

    def fail_az(self, az: str) -> None:
        if not isinstance(az, str) or az not in AZS:
            raise UnknownNodeError(az, list(AZS))
        self.fail_node(az)

    def restore_node(self, name: str) -> None:
        """The node answers again and catches up from its peers by gossip."""
        volume = self._volume
        for node_name in self._names(name):
            node = self.nodes[node_name]
            if node.failed:
                node = volume._reload_node(node_name)
                if node.failed:
                    continue  # still unreadable: it stays down, its reason in status()
            volume.transport.set_down(node_name, False)
            volume.read_ranking.forget(node_name)
            volume.send_memberships(node_name)  # changes it missed while down
            for destination, message in node.restart():
                volume.transport.send(node_name, destination, message)
        volume._retransmit()
        volume._settle()
        volume.note_reachability()
        if volume._changes:
            volume.advance_changes()  # a repair whose replaced node is back is undone

    def restore_az(self, az: str) -> None:
        if not isinstance(az, str) or az not in AZS:
            raise UnknownNodeError(az, list(AZS))
        self.restore_node(az)

    def partition(self, *groups: Any) -> None:
        """Cuts links between groups of endpoint names ("writer" and node names)."""
        self._volume._check_open()
        self._volume._refuse_if_readonly("a partition")
        known = {self._volume.writer_name, *self.nodes}
        for group in groups:
            if not isinstance(group, list | tuple | set | frozenset):
                raise InvalidArgumentError(f"a partition group is a list of names, not {group!r}")
            for name in group:
                if not isinstance(name, str) or name not in known:
                    raise UnknownNodeError(name, sorted(known))
        self._volume.transport.partition(groups)
        self._volume.note_reachability()

    # --- the fleet: moves and repairs (protocol/membership.py) ----------------------------

    def move_segment(self, pg: int, src: str, dst: str) -> None:
        """Moves PG ``pg``'s segment from node ``src`` to node ``dst`` of the same AZ by a
        membership change; returns once ``dst`` holds it and ``src`` let it go.

        Raises :class:`PlacementError` (another AZ, a node that already holds the PG,
        one that holds none, no such PG), :class:`UnknownNodeError`, or
        :class:`MembershipChangeError` (a change of the PG already running, too few
        members answering), changing nothing; MembershipChangeError also when
        ``dst`` is not ready within the commit timeout (the move then finishes later).
        """
        volume = self._volume
        volume._check_open()
        volume._refuse_if_readonly("a segment move")
        with volume.transport.lock:
            volume._check_open()
            volume.move_segment(pg, src, dst)

    def rebalance(self, limit: int = 64) -> list[tuple[int, str, str]]:
        """Moves segments off the busiest node of each AZ onto its least loaded one until
        they differ by at most one (at most ``limit`` moves): the moves, as (PG, from, to)."""
        volume = self._volume
        volume._check_open()
        volume._refuse_if_readonly("a rebalance")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidArgumentError(f"limit is a number of moves, not {limit!r}")
        with volume.transport.lock:
            volume._check_open()
            moves: list[tuple[int, str, str]] = volume.rebalance(limit)
            return moves

    def check_repairs(self) -> list[int]:
        """Runs the repair policy now (Volume.create's ``repair_after``): replaces the
        segments of nodes unreachable that long; the PGs whose repair started."""
        volume = self._volume
        volume._check_open()
        volume._refuse_if_readonly("a repair")
        with volume.transport.lock:
            volume._check_open()
            return [change.pg_id for change in volume.check_repairs()]

    def heal(self) -> None:
        volume = self._volume
        volume._check_open()
        volume._refuse_if_readonly("a heal")
        volume.transport.heal()
        for node in self.nodes.values():
            volume.read_ranking.forget(node.name)
            if self.is_up(node.name):
                for destination, message in node.restart():
                    volume.transport.send(node.name, destination, message)
        volume._retransmit()
        volume._settle()


class Embedded(Writer):
    """The writer's hold on its nodes: wiring them to the transport, the shared flush
    of nodes on one file system, reloading a failed node (mixed into Volume)."""

    _group_sync: bool  # nodes on one file system share one flush (GroupSyncJob)

    def close(self) -> None:
        """Closes the volume (volume.py)."""
        raise NotImplementedError

    def _host_nodes(self, nodes: dict[str, StorageNode] | None, placement: Placement) -> None:
        """Registers the nodes (the fleet in memory if none are given) and the writer
        with the transport, and sets up the shared flush when the nodes share a disk."""
        options = self.options
        self.placement = placement
        self._spare_disks: dict[str, Disk] = {}  # disks for new nodes (simulated ones)
        if nodes is None:
            nodes = make_nodes(options, None, self.volume_id, None, placement)
        self.nodes = nodes
        devices = {
            node.disk.device() if isinstance(node.disk, RealDisk) else None
            for node in self.nodes.values()
        }
        # Nodes on one file system share its flush (GroupSyncJob); otherwise each
        # node syncs its own files.
        self._group_sync = (
            options.durability == "fsync" and len(devices) == 1 and None not in devices
        )
        for node in self.nodes.values():
            self._register_node(node)
        self._flusher: Flusher | None = None
        if self._group_sync:
            # Node folders may differ in what their flush needs (a data-journal flag
            # on one, flush.py): syncfs serves all of them.
            methods = {
                n.disk.flush_method for n in self.nodes.values() if isinstance(n.disk, RealDisk)
            }
            method = methods.pop() if len(methods) == 1 else "syncfs"
            assert method is not None
            self._flusher = Flusher(method, options.backend)
            for node in self.nodes.values():
                assert isinstance(node.disk, RealDisk)
                node.disk.on_write = self._flusher.kick  # write-back starts at once
            self.transport.register_syncer(
                "disks", group_syncer(lambda: list(self.nodes.values()), self._flusher)
            )
        self.transport.register(self.writer_name, self._handle)
        self.transport.before_lead = self._send_held_frames
        if isinstance(self.transport, SimulatedTransport):
            self.transport.tick_targets = [*self.nodes, self.writer_name]
        self.cluster = Cluster(self)

    def _provision_node(self, az: str) -> str:
        """Adds a new, empty node in ``az`` to the fleet (a repair's destination when the
        AZ has no node free): its folder under ``nodes/`` (or a spare disk, for a
        volume on given disks), the volume's epoch, truncations and history in its
        node.meta, then volume.meta names it. Raises PlacementError without a disk
        for it, StorageWriteError when it cannot write."""
        name = self.placement.add_node(az)
        on_given_disks = self.path is None and any(
            node.disk is not None for node in self.nodes.values()
        )
        disks = None
        if on_given_disks:
            spare = self._spare_disks.pop(name, None)
            if spare is None:
                self.placement.added.remove(name)
                raise PlacementError(
                    f"no disk for a new node {name}: a volume on given disks takes "
                    "spare_disks for the nodes repairs add"
                )
            disks = {name: spare}
        root = Path(self.path) if self.path is not None else None
        node = make_node(name, self.options, root, self.volume_id, disks, self.placement)
        node.placement = self.placement.copy()  # new and empty: it takes them all at once
        node.epoch = self.epoch
        node.truncations = list(self.truncations)
        node.history = self.history.keyed(self.history.key)
        node.vdl_hint = self._vdl
        node.write_meta()
        if node.failed:
            self.placement.added.remove(name)
            raise StorageWriteError(f"the new node {name} cannot write: {node.failed}")
        self.nodes[name] = node
        if self._flusher is not None and isinstance(node.disk, RealDisk):
            node.disk.on_write = self._flusher.kick
        self._register_node(node)
        if isinstance(self.transport, SimulatedTransport):
            self.transport.tick_targets.insert(-1, name)
        self._write_volume_meta()
        return name

    def _register_node(self, node: StorageNode) -> None:
        def stopped() -> None:
            self.transport.set_down(node.name, True)
            self._down_since.setdefault(node.name, self.clock.now())

        node.on_stop = stopped
        if node.failed:  # stopped by a disk error before it was registered (create)
            node.on_stop()
        # Only fsync durability has sync work for the transport to run.
        per_node = node.durability == "fsync" and node.disk is not None and not self._group_sync
        self.transport.register(node.name, node.handle, node_syncer(node) if per_node else None)

    def _reload_node(self, name: str) -> StorageNode:
        """Replaces a failed node by a fresh one that reloads and re-verifies its disk."""
        old = self.nodes[name]
        node = StorageNode(
            name,
            old.az,
            self.geometry,
            list(self.placement.fleet),
            self.options.backend,
            old.disk,
            self.volume_id,
            self.options.durability,
            old.cache_bytes,
            old.placement,
        )
        if node.disk is not None:
            try:
                node.load()
            except (AuroraStorageError, OSError) as error:
                node.failed = f"cannot load: {error}"
        self.nodes[name] = node
        self._register_node(node)
        return node

    def _check_rebuilt(self, rebuilt: list[str]) -> None:
        """Raises SegmentRepairNeededError if a rebuilt node could not catch up by gossip;
        its new folder goes again, so the node is still missing afterwards."""
        if not rebuilt:
            return
        self._settle()
        for name in rebuilt:
            node = self.nodes[name]
            lacking = [s for _, s in sorted(node.segments.items()) if s.needs_repair or s.failed]
            if not lacking:
                continue
            detail = f"PG {lacking[0].pg_id}: {lacking[0].needs_repair or lacking[0].failed}"
            if len(lacking) > 1:
                detail += f" (and {len(lacking) - 1} more PGs)"
            self.close()
            for missing in rebuilt:
                disk = self.nodes[missing].disk
                if isinstance(disk, RealDisk):
                    shutil.rmtree(disk.root, ignore_errors=True)
            raise SegmentRepairNeededError(name, detail)


def check_collaborators(
    clock: Any, transport: Any, disks: Any, fleet: tuple[str, ...] | None = None
) -> None:
    """The objects create and open take: a clock, a transport, node disks by name (one
    per node of ``fleet``, when it is known)."""
    if clock is not None and not callable(getattr(clock, "now", None)):
        raise InvalidArgumentError(f"clock must have a now() method, not {clock!r}")
    if transport is not None and not isinstance(transport, Transport):
        raise InvalidArgumentError(f"transport must be a Transport, not {transport!r}")
    if disks is None:
        return
    if not isinstance(disks, dict) or (fleet is not None and sorted(disks) != sorted(fleet)):
        names = ", ".join(fleet) if fleet is not None else "node"
        raise InvalidArgumentError(f"disks must map each of {names} to a disk")
