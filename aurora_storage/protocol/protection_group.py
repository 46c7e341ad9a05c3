"""The writer's view of one protection group: six segments, quorum sets, PGCL.

A PG's six segments sit on six nodes, two per AZ in three AZs. A write is
durable once a write quorum (4 of 6) holds it; recovery reads need a read
quorum (3 of 6); any write quorum and any read quorum intersect. During a
membership change (replace F by G) a write must reach a write quorum of both
the old and the new member set: :class:`QuorumSet` holds one or more member
sets and counts a point as reached only when every set reaches it.

Invariants: PGCL never decreases; frames leave ``outstanding`` only once PGCL
covers them; the writer allocates a PG's records in chain order. A read at a
point at or below VDL asks for an SCL no higher than the PG's last record at
or below VDL (:meth:`ProtectionGroup.required_scl`): a PG's SCL stops at its
own records, so a commit of this PG in flight above VDL, or VDL resting on
another PG's record, must not raise what a reader asks of its segments.
"""

from __future__ import annotations

import functools
from array import array
from collections import deque
from dataclasses import dataclass, field

WRITE_QUORUM = 4
READ_QUORUM = 3
SEGMENTS_PER_PG = 6


@dataclass(frozen=True)
class QuorumSet:
    """One member set per configuration in effect (two during a membership change)."""

    member_sets: tuple[tuple[str, ...], ...]
    write_quorum: int = WRITE_QUORUM
    read_quorum: int = READ_QUORUM

    @functools.cached_property
    def members(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for members in self.member_sets:
            seen.update(dict.fromkeys(members))
        return tuple(seen)

    def point(self, scls: dict[str, int], quorum: int) -> int:
        """Highest LSN that ``quorum`` members of every set have reached."""
        reached = []
        get = scls.get
        for members in self.member_sets:
            ranked = sorted([get(member, 0) for member in members], reverse=True)
            reached.append(ranked[quorum - 1])
        return min(reached)

    def write_point(self, scls: dict[str, int]) -> int:
        return self.point(scls, self.write_quorum)

    def read_point(self, scls: dict[str, int]) -> int:
        return self.point(scls, self.read_quorum)


RECENT_FRAMES = 8  # frames of a PG whose LSN ranges the writer keeps for reads


@dataclass
class Outstanding:
    """A frame sent but not yet covered by PGCL; kept for retransmission."""

    first_lsn: int
    last_lsn: int
    frame: bytes


@dataclass
class ProtectionGroup:
    pg_id: int
    quorum: QuorumSet
    tail_lsn: int = 0  # last LSN allocated in this PG: the next record's backlink
    pgcl: int = 0
    scls: dict[str, int] = field(default_factory=dict)
    outstanding: deque[Outstanding] = field(default_factory=deque)
    # After recovery: the PG's last record at or below VDL, which must reach a write
    # quorum (gossip spreads it) before VCL may pass it.
    durable_target: int = 0
    # The PG's last LSN at or below the VDL last passed to required_scl or
    # note_frame, and the last LSNs of its frames allocated above that VDL, oldest
    # first (trimmed at each commit, so bounded by the frames in flight).
    visible_tail_lsn: int = 0
    frames_above_vdl: deque[int] = field(default_factory=deque)
    # The gossip floor last sent to the PG's segments (a write or a Maintain).
    floor_sent: int = 0
    # First and last LSN of the PG's last RECENT_FRAMES frames, flat, oldest first:
    # a read point between two of them needs only the earlier one's segments.
    recent: array[int] = field(default_factory=lambda: array("Q"))
    # Members the gossip floor does not wait for: during a membership change, the
    # ones it replaces and the ones it adds (filled from pages: membership.py).
    floor_skip: frozenset[str] = frozenset()

    def note_frame(self, last_lsn: int, vdl: int, first_lsn: int = 0) -> None:
        """The writer allocated a frame of this PG, from ``first_lsn`` to ``last_lsn``."""
        recent = self.recent
        if first_lsn:
            if len(recent) >= 2 * RECENT_FRAMES:
                del recent[:2]
            recent.append(first_lsn)
            recent.append(last_lsn)
        self._release(vdl)
        if not self.frames_above_vdl:
            # Every earlier frame is at or below VDL, and so is the tail a recovery or
            # a restore set: that is the PG's last record a reader may need.
            self.visible_tail_lsn = self.tail_lsn
        self.tail_lsn = last_lsn
        self.frames_above_vdl.append(last_lsn)

    def _release(self, vdl: int) -> None:
        above = self.frames_above_vdl
        while above and above[0] <= vdl:
            self.visible_tail_lsn = above.popleft()

    def tail_at(self, vdl: int) -> int:
        """The PG's last LSN at or below ``vdl`` (the writer's VDL, never decreasing)."""
        self._release(vdl)
        if not self.frames_above_vdl:
            return self.tail_lsn
        return self.visible_tail_lsn

    def required_scl(self, read_point: int, vdl: int) -> int:
        """The SCL a segment needs to serve ``read_point`` (at or below ``vdl``): it then
        holds every record of this PG at or below the read point. Between two recent
        frames, the end of the earlier one (a segment that has it holds every record
        up to the next); else the read point itself (SCLs are frame ends)."""
        tail = self.tail_at(vdl)
        if read_point >= tail:
            return tail
        recent = self.recent
        if recent and recent[0] <= read_point:
            for index in range(len(recent) - 2, -1, -2):
                if recent[index] <= read_point:
                    return min(read_point, recent[index + 1])
        return read_point

    def set_quorum(self, quorum: QuorumSet) -> bool:
        """Takes the member sets of a membership change; True when PGCL moved (the new
        set's members may already hold more than the old set's write quorum did)."""
        self.quorum = quorum
        return self._raise_pgcl()

    def _raise_pgcl(self) -> bool:
        pgcl = self.quorum.write_point(self.scls)
        if pgcl <= self.pgcl:
            return False
        self.pgcl = pgcl
        while self.outstanding and self.outstanding[0].last_lsn <= pgcl:
            self.outstanding.popleft()
        return True

    def record_scl(self, node: str, scl: int) -> bool:
        """Takes a segment's SCL from an ack; True when PGCL moved."""
        if scl <= self.scls.get(node, 0):
            return False
        self.scls[node] = scl
        if scl <= self.pgcl:
            return False  # a quorum point rises only with an SCL above it
        return self._raise_pgcl()

    def first_unacknowledged(self) -> int | None:
        """First LSN of this PG without a write quorum, or None."""
        if self.outstanding:
            return self.outstanding[0].first_lsn
        if self.pgcl < self.durable_target:
            return self.pgcl + 1
        return None

    def readable_nodes(self, required_scl: int) -> list[str]:
        """Members whose acknowledged SCL reaches ``required_scl``."""
        return [node for node in self.quorum.members if self.scls.get(node, 0) >= required_scl]

    def floor(self) -> int:
        """Highest LSN every member has acknowledged (those of ``floor_skip`` aside)."""
        skip = self.floor_skip
        return min(
            (self.scls.get(node, 0) for node in self.quorum.members if node not in skip),
            default=0,
        )

    def lagging(self, frame: Outstanding) -> list[str]:
        return [node for node in self.quorum.members if self.scls.get(node, 0) < frame.last_lsn]
