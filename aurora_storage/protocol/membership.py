"""Membership changes of protection groups, by quorum sets: repairs and moves.

A PG's members change without a consensus round, as the SIGMOD 2018 paper
describes. Replacing member F by G takes the PG through two membership
epochs (placement.py):

1. **Both sets.** The writer writes the membership (ABCDEF, ABCDEG) under a
   new epoch to the members; once a write quorum of ABCDEF holds it (and G,
   which must know it is a member), writes need four of each set and reads
   use either. G starts empty, votes in nothing, and is filled by a segment
   repair from a peer's pages (hydration.py), then by gossip.
2. **Done or undone.** Once G's SCL reaches the PG's PGCL, the membership
   (ABCDEG) goes under the next epoch to a write quorum of both sets, and F
   lets its segment go. A repair whose F answers again before G is ready is
   undone the same way: (ABCDEF), and G lets go.

When the old set has no write quorum left (AZ+1: three of six unreachable)
step 1 cannot be written to one. Then the change switches directly to the
new set, written to the three members that still answer (a read quorum of
the old set: together they hold every acknowledged write) and to the new
members; the new members hydrate from them and the PG takes writes again
once one of them is ready. The volume's record of the placement (volume.meta,
written before the change is used) is what a later open starts from; a
recovery also takes the highest membership any answering node holds.

Each change bumps the PG's membership epoch, a pair (volume epoch, sequence):
epochs of one PG only rise, and two writers never make two memberships of
one epoch. A node refuses a membership whose epoch is not above its own and
frames of a PG it is no member of.

The repair policy (:meth:`Memberships.check_repairs`) replaces the segments of
a node unreachable for ``repair_after`` seconds on the volume's clock, on
another node of its AZ (the least loaded that holds no segment of the PG;
with none, a new node of the AZ). It runs when the volume is used (a commit,
status) and when called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..config import az_of
from ..errors import MembershipChangeError, PlacementError, UnknownNodeError
from . import messages as m
from .placement import Membership
from .protection_group import READ_QUORUM, WRITE_QUORUM
from .writer import Writer


@dataclass
class Change:
    """A membership change in progress (step 1 written, step 2 not yet)."""

    pg_id: int
    old: tuple[str, ...]
    new: tuple[str, ...]
    kind: str  # "repair" or "move"
    started: float  # on the volume's clock
    direct: bool = False  # switched straight to ``new`` (the old set had no write quorum)
    polled: float = 0.0  # when the added members were last asked for their SCLs

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(name for name in self.new if name not in self.old)

    @property
    def replaced(self) -> tuple[str, ...]:
        return tuple(name for name in self.old if name not in self.new)


class Memberships(Writer):
    """The writer's side of membership changes (module docstring)."""

    def _init_memberships(self, repair_after: float | None) -> None:
        self.repair_after = repair_after
        self._changes: dict[int, Change] = {}
        self._member_acks: dict[tuple[int, tuple[int, int]], set[str]] = {}
        # Step 2 of changes, sent and waiting for their acks: PG -> (membership, when sent).
        self._finishing: dict[int, tuple[Membership, float]] = {}
        self._down_since: dict[str, float] = {}
        self._member_epoch_sent = (0, 0)  # the highest membership epoch this writer made
        self.repair_problems: list[str] = []  # why the last repairs could not start

    # --- the messages ---------------------------------------------------------------------

    def _on_members_set(self, message: m.MembersSet) -> None:
        if message.epoch != self.epoch:
            return
        key = (message.pg_id, (int(message.member_epoch[0]), int(message.member_epoch[1])))
        acks = self._member_acks.get(key)
        if acks is None:
            return
        acks.add(message.node)
        finishing = self._finishing.get(message.pg_id)
        if finishing is not None and finishing[0].epoch == key[1] and self._finished(key[0], acks):
            del self._finishing[key[0]], self._member_acks[key]
            self._changes.pop(key[0], None)
            self._adopt_membership(key[0], finishing[0])

    def _next_member_epoch(self, pg_id: int) -> tuple[int, int]:
        """An epoch above the PG's and above every one this writer sent (a membership
        that reached no quorum may still arrive somewhere late: its epoch is spent)."""
        epoch, sequence = self.placement.membership(pg_id).epoch
        if epoch != self.epoch:
            sequence = 0
        if self._member_epoch_sent[0] == self.epoch:
            sequence = max(sequence, self._member_epoch_sent[1])
        self._member_epoch_sent = (self.epoch, sequence + 1)
        return self._member_epoch_sent

    def _write_membership(
        self,
        pg_id: int,
        membership: Membership,
        targets: Iterable[str],
        enough: Callable[[set[str]], bool],
        source: str = "",
    ) -> set[str]:
        """Sends ``membership`` to ``targets``; the nodes that hold it durably once
        ``enough`` of them do (or the commit timeout passed)."""
        key = (pg_id, membership.epoch)
        acks = self._member_acks[key] = set()
        self._finishing.pop(pg_id, None)
        message = m.SetMembers(self.epoch, pg_id, membership.epoch, membership.member_sets, source)
        try:
            for name in dict.fromkeys(targets):
                if name in self.nodes:
                    self.transport.send(self.writer_name, name, message)
            self.transport.run_until(lambda: enough(acks), self.options.commit_timeout)
            return set(acks)
        finally:
            del self._member_acks[key]

    def _adopt_membership(self, pg_id: int, membership: Membership) -> None:
        """The writer's view follows a membership a quorum holds: placement, the PG's
        quorum sets, volume.meta."""
        self.placement.set_membership(pg_id, membership)
        pg = self.pgs.get(pg_id)
        if pg is not None:
            if pg.set_quorum(self.placement.quorum(pg_id)):
                self._advance()
            pg.floor_skip = self._floor_skip(pg_id)
        self._write_volume_meta()

    def _floor_skip(self, pg_id: int) -> frozenset[str]:
        """Members the PG's gossip floor does not wait for: those a change replaces and
        those it adds while they are not ready (they are filled from pages)."""
        change = self._changes.get(pg_id)
        if change is None:
            return frozenset()
        return frozenset((*change.replaced, *change.added))

    def _reachable(self, name: str) -> bool:
        node = self.nodes.get(name)
        return (
            node is not None
            and not node.failed
            and bool(self.transport.link_open(self.writer_name, name))
        )

    def send_memberships(self, name: str) -> None:
        """Tells a node back from an outage every membership a change set (it keeps those
        above its own, and lets go of the segments it is no member of any more)."""
        for pg_id, membership in sorted(self.placement.changes.items()):
            message = m.SetMembers(self.epoch, pg_id, membership.epoch, membership.member_sets)
            self.transport.send(self.writer_name, name, message)
        self._settle()

    # --- starting, finishing, undoing -------------------------------------------------------

    def change_membership(self, pg_id: int, replace: dict[str, str], kind: str) -> Change:
        """Starts replacing members of the PG (``replace``: old name -> new name); raises
        PlacementError for a change the placement cannot take and MembershipChangeError
        when another change runs or too few members take it, changing nothing."""
        self._check_change(pg_id, replace)
        current = self.placement.membership(pg_id)
        old = current.member_sets[0]
        fleet = self.placement.fleet
        new = tuple(sorted((replace.get(name, name) for name in old), key=fleet.index))
        live_old = [name for name in old if self._reachable(name)]
        direct = len(live_old) < WRITE_QUORUM
        change = Change(pg_id, old, new, kind, self.clock.now(), direct)
        added = set(change.added)
        if direct:
            sets: tuple[tuple[str, ...], ...] = (new,)

            def enough(acks: set[str]) -> bool:
                return added <= acks and sum(name in acks for name in old) >= READ_QUORUM

        else:
            sets = (old, new)

            def enough(acks: set[str]) -> bool:
                return added <= acks and sum(name in acks for name in old) >= WRITE_QUORUM

        membership = Membership(self._next_member_epoch(pg_id), sets)
        source = self._best_source(pg_id, [name for name in live_old if name in new])
        acks = self._write_membership(pg_id, membership, (*old, *new), enough, source)
        if not enough(acks):
            in_doubt = self._undo_write(pg_id, membership, acks, current)
            raise MembershipChangeError(
                pg_id,
                f"the membership change reached {len(acks)} nodes "
                f"({', '.join(sorted(acks)) or 'none'}); "
                f"{READ_QUORUM if direct else WRITE_QUORUM} of {', '.join(old)} and "
                f"{', '.join(sorted(added))} needed: it did not take effect",
                in_doubt,
            )
        self._changes[pg_id] = change
        self._adopt_membership(pg_id, membership)
        self.advance_changes()
        return change

    def _undo_write(
        self, pg_id: int, failed: Membership, acks: set[str], current: Membership
    ) -> bool:
        """After a change reached too few: the old membership again, under an epoch above
        the failed one, on the nodes that took it. True if some may still hold it."""
        if not acks:
            return False
        back = Membership(self._next_member_epoch(pg_id), current.member_sets)
        members = [name for sets in failed.member_sets for name in sets]
        written = self._write_membership(pg_id, back, members, lambda got: acks <= got)
        self.placement.set_membership(pg_id, back)
        self._write_volume_meta()
        return not acks <= written

    def _check_change(self, pg_id: int, replace: dict[str, str]) -> None:
        pg_count = -(-self.geometry.page_count // self.geometry.pages_per_pg)
        if isinstance(pg_id, bool) or not isinstance(pg_id, int) or not 0 <= pg_id < pg_count:
            raise PlacementError(f"no PG {pg_id!r}: the volume has PGs 0 to {pg_count - 1}")
        fleet = self.placement.fleet
        current = self.placement.membership(pg_id)
        if current.changing or pg_id in self._changes:
            raise MembershipChangeError(
                pg_id, "another membership change of this PG is running; it finishes first"
            )
        members = current.member_sets[0]
        for source, destination in replace.items():
            for name in (source, destination):
                if not isinstance(name, str) or name not in fleet:
                    raise UnknownNodeError(repr(name), list(fleet))
            if source not in members:
                raise PlacementError(f"{source} holds no segment of PG {pg_id}")
            if destination in members:
                raise PlacementError(f"{destination} already holds a segment of PG {pg_id}")
            if az_of(source) != az_of(destination):
                raise PlacementError(
                    f"{destination} is in {az_of(destination)}, {source} in {az_of(source)}: "
                    "a PG keeps two segments in each AZ"
                )
            if not self._reachable(destination):
                raise MembershipChangeError(pg_id, f"{destination} does not answer")
        if len(set(replace.values())) != len(replace):
            raise PlacementError(f"two segments of PG {pg_id} cannot move to one node")

    def _best_source(self, pg_id: int, candidates: list[str]) -> str:
        """The live member a new member copies its pages from: the highest SCL."""
        pg = self.pgs.get(pg_id)
        if not candidates:
            return ""
        if pg is None:
            return candidates[0]
        return max(candidates, key=lambda name: pg.scls.get(name, 0))

    def _ready(self, change: Change) -> bool:
        """True once every added member holds what a write quorum holds of the PG."""
        pg = self.pgs.get(change.pg_id)
        if pg is None:
            return True  # nothing written: nothing to copy
        return all(pg.scls.get(name, 0) >= pg.pgcl for name in change.added)

    def advance_changes(self) -> None:
        """Sends step 2 of the changes that can finish (:meth:`_step_two`)."""
        messages = self._step_two()
        for destination, message in messages:
            self.transport.send(self.writer_name, destination, message)
        if messages:
            self._settle()

    def _step_two(self) -> list[tuple[str, m.Message]]:
        """Step 2 of every change whose new members are ready (and the undoing of every
        repair whose replaced member answers again first): the membership of one set,
        to the members of both; it takes effect once a write quorum of each set holds
        it (:meth:`_on_members_set`). Sent again after a commit timeout unanswered."""
        out: list[tuple[str, m.Message]] = []
        now = self.clock.now()
        for change in list(self._changes.values()):
            pg_id = change.pg_id
            ready = self._ready(change)
            if (
                not ready
                and now - max(change.started, change.polled) >= self.options.commit_timeout
            ):
                # Their SCL reports may have been lost: the membership again asks for them.
                change.polled = now
                current = self.placement.membership(pg_id)
                poll = m.SetMembers(self.epoch, pg_id, current.epoch, current.member_sets)
                out += [(name, poll) for name in change.added]
            if change.direct:
                if ready:
                    del self._changes[pg_id]
                    self._adopt_membership(pg_id, self.placement.membership(pg_id))
                continue
            pending = self._finishing.get(pg_id)
            if pending is not None:
                if now - pending[1] < self.options.commit_timeout:
                    continue
                membership = pending[0]
            else:
                back = (
                    change.kind == "repair"
                    and not ready
                    and all(self._reachable(name) for name in change.replaced)
                )
                if not (ready or back):
                    continue
                final = change.old if back else change.new
                membership = Membership(self._next_member_epoch(pg_id), (final,))
            self._finishing[pg_id] = (membership, now)
            self._member_acks.setdefault((pg_id, membership.epoch), set())
            message = m.SetMembers(self.epoch, pg_id, membership.epoch, membership.member_sets)
            out += [(name, message) for name in self.placement.quorum(pg_id).members]
        return out

    def _finished(self, pg_id: int, acks: set[str]) -> bool:
        """True once a write quorum of each of the PG's member sets holds step 2."""
        return all(
            sum(name in acks for name in members) >= WRITE_QUORUM
            for members in self.placement.quorum(pg_id).member_sets
        )

    # --- the repair policy ------------------------------------------------------------------

    def _membership_work(self) -> None:
        """At a commit: the repair policy, only while some node is or was unreachable or
        a change runs (a healthy volume pays one check)."""
        transport = self.transport
        if self._changes or self._down_since or transport.down or transport.cut_links:
            self.check_repairs()

    def note_reachability(self) -> None:
        """Notes since when each node has been unreachable, on the volume's clock."""
        now = self.clock.now()
        for name in self.placement.fleet:
            if self._reachable(name):
                self._down_since.pop(name, None)
            else:
                self._down_since.setdefault(name, now)

    def check_repairs(self) -> list[Change]:
        """Replaces the segments of every node unreachable for ``repair_after`` seconds
        (module docstring); the changes started. Finishes the ready ones first."""
        self.note_reachability()
        if self._changes:
            self.advance_changes()
        started: list[Change] = []
        if self.repair_after is None or not self._down_since:
            return started
        now = self.clock.now()
        self.repair_problems = []
        for name, since in sorted(self._down_since.items()):
            if now - since < self.repair_after:
                continue
            for pg_id in sorted(self.pgs):
                if pg_id in self._changes or name not in self.placement.members(pg_id):
                    continue
                try:
                    target = self._replacement(pg_id, name)
                    started.append(self.change_membership(pg_id, {name: target}, "repair"))
                except (MembershipChangeError, PlacementError, UnknownNodeError) as error:
                    self.repair_problems.append(f"{name}: {error}")
        return started

    def _replacement(self, pg_id: int, name: str) -> str:
        """The node a repair of ``name``'s segment of the PG goes to: the least loaded
        reachable node of its AZ that holds no segment of the PG, else a new one."""
        az = az_of(name)
        members = set(self.placement.membership(pg_id).member_sets[-1])
        candidates = [
            other
            for other in self.placement.nodes_in(az)
            if other not in members and self._reachable(other)
        ]
        if not candidates:
            return self._provision_node(az)
        load = self.placement.load(self.pgs)
        return min(candidates, key=lambda other: (load.get(other, 0), other))

    # --- heat management ----------------------------------------------------------------------

    def move_segment(self, pg_id: int, source: str, destination: str) -> None:
        """Moves the PG's segment from ``source`` to ``destination`` (same AZ) by a
        membership change, returning once it is done (MembershipChangeError if the
        new member is not ready within the commit timeout: the change goes on)."""
        change = self.change_membership(pg_id, {source: destination}, "move")

        def done() -> bool:
            if pg_id in self._changes and self._ready(change) and pg_id not in self._finishing:
                self.advance_changes()
            return pg_id not in self._changes

        self.transport.run_until(done, self.options.commit_timeout)
        if pg_id in self._changes:
            raise MembershipChangeError(
                pg_id,
                f"{destination} is not ready yet (hydrating): the move finishes once it is",
            )

    def rebalance(self, limit: int = 64) -> list[tuple[int, str, str]]:
        """Moves segments from the most loaded node of each AZ to its least loaded one
        while they differ by more than one (at most ``limit`` moves); the moves made,
        as (PG, source, destination)."""
        moves: list[tuple[int, str, str]] = []
        while len(moves) < limit:
            load = self.placement.load(self.pgs)
            best: tuple[int, int, str, str] | None = None
            for az in dict.fromkeys(az_of(name) for name in self.placement.fleet):
                live = [n for n in self.placement.nodes_in(az) if self._reachable(n)]
                if len(live) < 2:
                    continue
                busiest = max(live, key=lambda n: (load.get(n, 0), n))
                idlest = min(live, key=lambda n: (load.get(n, 0), n))
                gap = load.get(busiest, 0) - load.get(idlest, 0)
                if gap <= 1:
                    continue
                for pg_id in sorted(self.pgs):
                    members = self.placement.membership(pg_id).member_sets
                    if len(members) == 1 and busiest in members[0] and idlest not in members[0]:
                        if best is None or gap > best[0]:
                            best = (gap, pg_id, busiest, idlest)
                        break
            if best is None:
                break
            _, pg_id, source, destination = best
            self.move_segment(pg_id, source, destination)
            moves.append((pg_id, source, destination))
        return moves
