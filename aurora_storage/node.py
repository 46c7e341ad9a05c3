"""A storage node: its name and AZ, one segment per protection group, its epoch.

A node is a state machine: :meth:`StorageNode.handle` takes one message and
returns the messages to send, as (destination, message) pairs. It never
sleeps, reads a clock or touches a socket; the transport delivers. Segments
are created when their PG's first frame arrives (or when a peer's catalog
names it), so an unwritten PG costs nothing.

Invariants: a request with an epoch older than the node's is rejected and
changes nothing; a segment is never read above its SCL.
"""

from __future__ import annotations

from . import messages as m
from .errors import AuroraStorageError, VersionGoneError
from .segment import Geometry, Segment

WRITER = "writer"
GONE = "version gone"  # PageImage.problem when the read point was coalesced away

Outgoing = list[tuple[str, m.Message]]


class StorageNode:
    def __init__(
        self, name: str, az: str, geometry: Geometry, peers: list[str], backend: str | None = None
    ) -> None:
        self.name = name
        self.az = az
        self.geometry = geometry
        self.peers = [peer for peer in peers if peer != name]
        self.backend = backend
        self.epoch = 1
        self.segments: dict[int, Segment] = {}
        self.rejected_requests = 0
        self._ticks = 0

    def segment(self, pg_id: int) -> Segment:
        segment = self.segments.get(pg_id)
        if segment is None:
            segment = Segment(pg_id, self.geometry, self.backend)
            self.segments[pg_id] = segment
        return segment

    def handle(self, message: m.Message, sender: str) -> Outgoing:
        if isinstance(message, m.WriteFrames):
            return self._on_write(message, sender)
        if isinstance(message, m.ReadPage):
            return self._on_read(message, sender)
        if isinstance(message, m.GossipPull):
            return self._on_gossip_pull(message)
        if isinstance(message, m.GossipPush):
            return self._on_gossip_push(message)
        if isinstance(message, m.CatalogPull):
            return [(message.sender, m.Catalog(self.name, self._catalog()))]
        if isinstance(message, m.Catalog):
            return self._on_catalog(message)
        if isinstance(message, m.Tick):
            return self.background()
        return []

    def _stale(self, epoch: int, sender: str) -> Outgoing | None:
        if epoch < self.epoch:
            self.rejected_requests += 1
            reason = f"epoch {epoch} is older than node {self.name}'s epoch {self.epoch}"
            return [(sender, m.Rejected(self.name, self.epoch, reason))]
        self.epoch = epoch
        return None

    def _on_write(self, message: m.WriteFrames, sender: str) -> Outgoing:
        stale = self._stale(message.epoch, sender)
        if stale is not None:
            return stale
        segment = self.segment(message.pg_id)
        segment.receive(message.frames)
        scl = segment.persist()
        segment.maintain(message.retain_lsn, message.floor_lsn)
        out: Outgoing = [(sender, m.SegmentState(self.name, message.pg_id, self.epoch, scl))]
        if segment.pending:
            out += self._pull_from_peers(segment)
        return out

    def _on_read(self, message: m.ReadPage, sender: str) -> Outgoing:
        segment = self.segments.get(message.pg_id)
        scl = segment.scl if segment else 0
        problem = ""
        image = b""
        if segment is None or scl < message.required_scl:
            problem = f"SCL {scl} is below {message.required_scl}, needed at read point {message.read_point}"
        else:
            try:
                image = segment.read(message.page_no, message.read_point, message.annulled)
            except VersionGoneError:
                problem = GONE
            except AuroraStorageError as error:
                problem = str(error)
        return [
            (
                sender,
                m.PageImage(message.request_id, self.name, message.page_no, scl, image, problem),
            )
        ]

    def _pull_from_peers(self, segment: Segment) -> Outgoing:
        pull = m.GossipPull(self.name, segment.pg_id, segment.scl)
        return [(peer, pull) for peer in self.peers]

    def _on_gossip_pull(self, message: m.GossipPull) -> Outgoing:
        segment = self.segments.get(message.pg_id)
        if segment is None:
            return []
        frames = segment.gossip_pull(message.scl, message.sender)
        if not frames:
            return []
        return [(message.sender, m.GossipPush(self.name, message.pg_id, segment.scl, frames))]

    def _on_gossip_push(self, message: m.GossipPush) -> Outgoing:
        segment = self.segment(message.pg_id)
        before = segment.scl
        scl = segment.gossip_push(message.frames, message.sender, message.scl)
        out: Outgoing = []
        if scl > before:
            out.append((WRITER, m.SegmentState(self.name, message.pg_id, self.epoch, scl)))
        if scl < message.scl:
            # The peer holds more than one push carries: keep pulling.
            out.append((message.sender, m.GossipPull(self.name, message.pg_id, scl)))
        return out

    def _catalog(self) -> tuple[int, ...]:
        flat: list[int] = []
        for pg_id, segment in sorted(self.segments.items()):
            flat += (pg_id, segment.scl)
        return tuple(flat)

    def _on_catalog(self, message: m.Catalog) -> Outgoing:
        out: Outgoing = []
        for pg_id, peer_scl in zip(message.segments[::2], message.segments[1::2], strict=True):
            segment = self.segment(pg_id)
            segment.peer_scls[message.sender] = peer_scl
            if peer_scl > segment.scl:
                out.append((message.sender, m.GossipPull(self.name, pg_id, segment.scl)))
        return out

    def restart(self) -> Outgoing:
        """After a restart or a partition heals: learn what peers hold and catch up."""
        pull = m.CatalogPull(self.name)
        return [(peer, pull) for peer in self.peers]

    def background(self) -> Outgoing:
        """Periodic work: pull across holes; compare catalogs with one peer, in turn."""
        out: Outgoing = []
        for segment in self.segments.values():
            if segment.pending:
                out += self._pull_from_peers(segment)
        self._ticks += 1
        if self.peers:
            peer = self.peers[self._ticks % len(self.peers)]
            out.append((peer, m.CatalogPull(self.name)))
        return out

    def collect_garbage(self) -> None:
        """Drops frames that every peer is known to hold."""
        for segment in self.segments.values():
            known = [segment.peer_scls.get(peer, 0) for peer in self.peers]
            segment.collect_garbage(min(known, default=0))
