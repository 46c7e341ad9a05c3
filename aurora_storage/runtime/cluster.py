"""The embedded cluster: the six storage nodes a volume runs, and their fault controls.

:func:`make_nodes` builds one node per name, each on its own disk (a folder
under ``nodes/``, a given simulated disk, or none in memory).
:class:`Cluster` is the volume's handle on them for tests and demos: a node
or an AZ fails (stops answering, keeping what it stored) or comes back (and
catches up by gossip), and links between endpoints can be cut and healed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import AZS, NODE_NAMES, VolumeOptions
from ..errors import InvalidArgumentError, UnknownNodeError
from ..protocol.node import StorageNode
from .disk import Disk, RealDisk


def make_nodes(
    options: VolumeOptions, root: Path | None, volume_id: str, disks: dict[str, Disk] | None
) -> dict[str, StorageNode]:
    nodes = {}
    mode = "fsync" if options.durability == "fsync" else "os"
    for name in NODE_NAMES:
        disk: Disk | None = None
        if disks is not None:
            disk = disks[name]
        elif root is not None and options.durability != "memory":
            disk = RealDisk(root / "nodes" / name, mode)
        nodes[name] = StorageNode(
            name,
            name.split("-")[0],
            options.geometry(),
            list(NODE_NAMES),
            options.backend,
            disk,
            volume_id,
            options.durability,
        )
    return nodes


class Cluster:
    """Failure control of the six storage nodes, for tests and demos."""

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
            for destination, message in node.restart():
                volume.transport.send(node_name, destination, message)
        volume._retransmit()
        volume._settle()

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
