"""Where each protection group's six segments live: the fleet, the placement, memberships.

A volume runs on a fleet of storage nodes, a third in each of three AZs
(``az1-a``, ``az1-b``, ... ``az3-<letter>``: a node's AZ is its name's
prefix). Each PG has six segments, two on nodes of each AZ. Which two is
the placement:

- **By default** a rule of the PG number and the volume's first nodes (the
  fleet at create; nodes added later, as repairs make them, take segments
  only by a change): in an AZ of k nodes, PG p sits on nodes ``(2p + j) mod
  k`` and the next one, j the AZ's index. Over any k consecutive PGs every
  node of an AZ holds the same number of segments, and a PG's members follow
  from its number, so an unwritten PG costs nothing to place.
- **A change** (a repair or a move, membership.py) records the PG's
  membership explicitly: its epoch and its member sets. During a change a
  PG has two member sets, the old and the new: a write needs a write quorum
  of each, a read a read quorum of either (:class:`QuorumSet`).

A membership epoch is a pair (volume epoch of the writer that made the
change, sequence): a writer after a crash recovery makes changes under a
higher volume epoch, so two writers never make two memberships of one
epoch. The default membership has epoch (0, 0).

The volume's registers (node epochs, the truncations, the history) go to
every node, and a write of them counts once a write quorum of *every*
member set in use holds it (:meth:`Placement.covers`): any PG's read quorum
then sees it, which is what a recovery reads.

No state beyond the table, no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..config import AZS, NODES_DEFAULT, VolumeOptions, az_of, node_names
from ..errors import CorruptionError
from .protection_group import READ_QUORUM, SEGMENTS_PER_PG, WRITE_QUORUM, QuorumSet

DEFAULT_EPOCH = (0, 0)


@dataclass(frozen=True)
class Membership:
    """A PG's members as a change set them: one member set, or two during a change."""

    epoch: tuple[int, int]
    member_sets: tuple[tuple[str, ...], ...]

    @property
    def changing(self) -> bool:
        return len(self.member_sets) > 1

    def encode(self) -> list[Any]:
        return [self.epoch[0], self.epoch[1], [list(s) for s in self.member_sets]]

    @classmethod
    def decode(cls, raw: Any) -> Membership:
        try:
            epoch = (int(raw[0]), int(raw[1]))
            sets = tuple(tuple(str(name) for name in members) for members in raw[2])
        except (IndexError, TypeError, ValueError) as error:
            raise CorruptionError(f"bad membership record {raw!r} ({error})") from None
        if not sets or any(len(members) != SEGMENTS_PER_PG for members in sets):
            raise CorruptionError(f"bad membership record {raw!r}: six members per set")
        return cls(epoch, sets)


@functools.lru_cache(maxsize=4096)
def _quorum(member_sets: tuple[tuple[str, ...], ...]) -> QuorumSet:
    return QuorumSet(member_sets)


class Placement:
    """The fleet and each PG's membership (module docstring)."""

    def __init__(
        self,
        base: Iterable[str],
        added: Iterable[str] = (),
        changes: dict[int, Membership] | None = None,
    ) -> None:
        self.base = tuple(base)  # the fleet at create: the default rule's nodes
        self.added = list(added)  # nodes made later (repairs), in order
        self.changes: dict[int, Membership] = dict(changes or {})
        self._by_az: dict[str, list[str]] = {az: [] for az in AZS}
        for name in self.base:
            self._by_az[az_of(name)].append(name)
        self._sets_cache: list[QuorumSet] | None = None

    @classmethod
    def of_count(cls, count: int) -> Placement:
        return cls(node_names(count))

    # --- the fleet ------------------------------------------------------------------------

    @property
    def fleet(self) -> tuple[str, ...]:
        return (*self.base, *self.added)

    def nodes_in(self, az: str) -> list[str]:
        return [name for name in self.fleet if az_of(name) == az]

    def add_node(self, az: str) -> str:
        """A new node's name in ``az`` (the next free letter), added to the fleet."""
        taken = set(self.fleet)
        for i in range(26):
            name = f"{az}-{chr(ord('a') + i)}"
            if name not in taken:
                self.added.append(name)
                self._sets_cache = None
                return name
        raise ValueError(f"{az} has no free node name left (26 per AZ)")

    # --- memberships ------------------------------------------------------------------------

    def default_members(self, pg_id: int) -> tuple[str, ...]:
        members: list[str] = []
        for j, az in enumerate(AZS):
            nodes = self._by_az[az]
            k = len(nodes)
            first = (2 * pg_id + j) % k
            second = (first + 1) % k
            members += (nodes[min(first, second)], nodes[max(first, second)])
        return tuple(members)

    def membership(self, pg_id: int) -> Membership:
        changed = self.changes.get(pg_id)
        if changed is not None:
            return changed
        return Membership(DEFAULT_EPOCH, (self.default_members(pg_id),))

    def quorum(self, pg_id: int) -> QuorumSet:
        changed = self.changes.get(pg_id)
        if changed is not None:
            return _quorum(changed.member_sets)
        return _quorum((self.default_members(pg_id),))

    def members(self, pg_id: int) -> tuple[str, ...]:
        return self.quorum(pg_id).members

    def holds(self, name: str, pg_id: int) -> bool:
        return name in self.quorum(pg_id).members

    def set_membership(self, pg_id: int, membership: Membership) -> bool:
        """Takes ``membership`` if its epoch is above the PG's; True if it did."""
        if membership.epoch <= self.membership(pg_id).epoch:
            return False
        self.changes[pg_id] = membership
        self._sets_cache = None
        return True

    def member_sets(self) -> list[QuorumSet]:
        """Every distinct member set in use: the default rule's and each change's."""
        if self._sets_cache is None:
            seen: dict[tuple[str, ...], None] = {}
            cycle = max(len(nodes) for nodes in self._by_az.values())
            for pg_id in range(cycle):
                seen[self.default_members(pg_id)] = None
            for membership in self.changes.values():
                for members in membership.member_sets:
                    seen[members] = None
            self._sets_cache = [_quorum((members,)) for members in seen]
        return self._sets_cache

    def covers(self, names: Iterable[str], quorum: int) -> bool:
        """True if ``names`` hold ``quorum`` members of every member set in use."""
        present = set(names)
        return all(
            sum(member in present for member in members.members) >= quorum
            for members in self.member_sets()
        )

    def covers_write(self, names: Iterable[str]) -> bool:
        return self.covers(names, WRITE_QUORUM)

    def covers_read(self, names: Iterable[str]) -> bool:
        return self.covers(names, READ_QUORUM)

    def shortfall(self, names: Iterable[str], quorum: int) -> str:
        """Why ``names`` do not cover ``quorum`` (:meth:`covers`), for an error: "4
        needed", naming the first member set they fall short in when there are several."""
        present = set(names)
        sets = self.member_sets()
        for members in sets:
            held = [member for member in members.members if member in present]
            if len(held) < quorum:
                if len(sets) == 1:
                    return f"{quorum} needed"
                return (
                    f"{quorum} needed of each PG's six, and {len(held)} of "
                    f"{', '.join(members.members)} are"
                )
        return ""

    def load(self, pg_ids: Iterable[int]) -> dict[str, int]:
        """Segments per node for the PGs ``pg_ids`` (both sets of a changing PG)."""
        counts = dict.fromkeys(self.fleet, 0)
        for pg_id in pg_ids:
            for name in self.quorum(pg_id).members:
                counts[name] = counts.get(name, 0) + 1
        return counts

    # --- records ------------------------------------------------------------------------

    def copy(self) -> Placement:
        return Placement(self.base, self.added, self.changes)

    def encode(self) -> dict[str, Any]:
        return {
            "base": list(self.base),
            "added": list(self.added),
            "changes": [
                [pg_id, *membership.encode()] for pg_id, membership in sorted(self.changes.items())
            ],
        }

    @classmethod
    def decode(cls, raw: Any) -> Placement:
        try:
            base = [str(name) for name in raw["base"]]
            added = [str(name) for name in raw.get("added", ())]
            changes = {int(row[0]): Membership.decode(row[1:]) for row in raw.get("changes", ())}
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise CorruptionError(f"bad placement record ({error})") from None
        if len(base) < NODES_DEFAULT or len(base) % 3 or set(map(az_of, base)) != set(AZS):
            raise CorruptionError(f"bad placement record: fleet {base}")
        return cls(base, added, changes)


def placement_of(options: VolumeOptions) -> Placement:
    """The placement volume.meta records in ``options``, or the default one."""
    if options.placement is not None:
        return Placement.decode(options.placement)
    return Placement.of_count(options.nodes)
