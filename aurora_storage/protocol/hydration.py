"""Segment repair: a segment whose peers collected the frames it lacks is rebuilt
from one of them (hydration), then catches up by gossip.

Gossip mends a segment only while some peer still holds the frames it lacks;
once every peer checkpointed past them (a node down for long, a node whose
disk was lost), only a copy of a peer's pages can. The repairing segment
asks one peer (:class:`messages.HydratePull`) for its pages as of a point the
peer picks, the higher of its coalesced point and its chain base, a chunk
of HYDRATE_PAGES pages at a time, in page order; the last chunk brings the
peer's chain frames above that point. The pages go straight to the page
store on a node with a disk (never all in memory), into the slots the
segment's last durable checkpoint does not name; then a checkpoint file at
that point and an empty log replace the segment's files, so a crash during a
repair leaves the segment as it was before it (still needing repair). The
new segment takes the frames, stays suspect until it has caught up with
enough peers (as after any damage), and pulls what came since by gossip.

A peer that cannot serve the point any more (it folded past it, or collected
the frames above it between two chunks) answers with LSN 0, and the repair
starts again; a peer that stops answering is replaced by another at a later
tick. Versions below the repair point are not copied: reads of them, and
backtracks below it, are served by the other replicas (the node answers no
time query as trusted until the window has moved past the repair point).
"""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import CorruptionError, VersionGoneError
from . import messages as m
from .disk_history import clip
from .node_storage import NodeStorage, checkpoint_name, checkpoint_object, log_name
from .page_store import StoreMap
from .segment import Segment

HYDRATE_PAGES = 1024  # pages a push carries (16 MiB of 16 KiB pages)
HYDRATE_PATIENCE = 8  # ticks without a push before a repair asks another peer

Outgoing = list[tuple[str, m.Message]]


@dataclass
class Repair:
    """A segment repair in progress on the repairing node."""

    peer: str
    started: int  # the node's tick when the last push came (or the pull went)
    lsn: int = 0  # the point its pages are at, once the first push named it
    segment: Segment | None = None  # the new segment, filled chunk by chunk
    page_nos: list[int] = field(default_factory=list)  # pages written to the store so far
    slots: list[int] = field(default_factory=list)  # and the slot of each


class Hydration(NodeStorage):
    """Segment repair on a storage node (module docstring), mixed into StorageNode."""

    peers: list[str]
    name: str
    writer: str
    _peers_of: Callable[[int], list[str]]
    _ticks: int
    _repairs: dict[int, Repair]
    _tried: dict[int, set[str]]  # peers each repair asked in vain, this round
    _sources: dict[tuple[int, int], list[int]]  # (PG, LSN) -> page list a peer serves
    on_repair_pages: Callable[[int], None] | None  # told the pages each push installed
    _resident: OrderedDict[int, int]
    _resident_total: int
    _keep_cache: Callable[[Segment], None]
    _pull_from_peers: Callable[[Segment], Outgoing]
    _ask_vouchers: Callable[[Segment], Outgoing]

    # --- the repairing side --------------------------------------------------------------

    def _start_repair(self, pg_id: int, peer: str) -> Outgoing:
        """Asks ``peer`` for the PG's pages (a new repair, or one started again)."""
        if self.failed or (not self._writes_logs and self.disk is not None):
            return []  # a node that writes nothing repairs nothing
        self._repairs[pg_id] = Repair(peer, self._ticks)
        return [(peer, m.HydratePull(self.name, pg_id, 0, 0))]

    def _retry_repairs(self) -> Outgoing:
        """At a tick: repairs whose peer went quiet, and segments that need one but have
        none running, ask a peer they did not ask in vain yet (all of them, in turn)."""
        out: Outgoing = []
        for pg_id, segment in list(self.segments.items()):
            if not segment.needs_repair or segment.failed:
                continue
            repair = self._repairs.get(pg_id)
            if repair is not None and self._ticks - repair.started < HYDRATE_PATIENCE:
                continue
            peer = self._next_peer(pg_id, repair.peer if repair is not None else None)
            if peer is None:
                peers = self._peers_of(pg_id)
                peer = peers[0] if peers else None  # every one, in turn, again
            if peer is not None:
                out += self._start_repair(pg_id, peer)
        return out

    def _next_peer(self, pg_id: int, failed: str | None) -> str | None:
        """The next peer a repair of ``pg_id`` asks, ``failed`` having served it in vain;
        None once every peer was asked (the round starts over)."""
        tried = self._tried.setdefault(pg_id, set())
        if failed is not None:
            tried.add(failed)
        for peer in self._peers_of(pg_id):
            if peer not in tried:
                return peer
        tried.clear()
        return None

    def _on_hydrate_push(self, message: m.HydratePush) -> Outgoing:
        repair = self._repairs.get(message.pg_id)
        if repair is None or repair.peer != message.sender or self.failed:
            return []  # a repair already done, or given up on
        if repair.lsn and message.lsn not in (0, repair.lsn):
            return []  # a late copy of a push of an earlier attempt
        if not message.lsn:
            # The peer cannot serve (any more): the next peer not asked in vain yet,
            # or, once every one was, a tick or a catalog starts the repair again.
            peer = self._next_peer(message.pg_id, message.sender)
            if peer is None:
                del self._repairs[message.pg_id]
                return []
            return self._start_repair(message.pg_id, peer)
        repair.started = self._ticks
        if repair.segment is None:
            repair.lsn = message.lsn
            repair.segment = Segment(message.pg_id, self.geometry, self.backend)
        try:
            self._take_pages(repair, message)
        except CorruptionError:
            del self._repairs[message.pg_id]
            return []
        if self.on_repair_pages is not None and message.page_nos:
            self.on_repair_pages(len(message.page_nos))
        if message.next_start >= 0:
            pull = m.HydratePull(self.name, message.pg_id, repair.lsn, message.next_start)
            return [(message.sender, pull)]
        del self._repairs[message.pg_id]
        self._tried.pop(message.pg_id, None)
        return self._install(repair, message)

    def _take_pages(self, repair: Repair, message: m.HydratePush) -> None:
        """One push's pages: to the page store with a disk, else into memory."""
        segment = repair.segment
        assert segment is not None
        size = self.geometry.page_size
        if len(message.images) != len(message.page_nos) * size or len(message.page_lsns) != len(
            message.page_nos
        ):
            raise CorruptionError("a repair push whose images do not match its pages")
        if not message.page_nos:
            return
        if any(not segment.page_lo <= p < segment.page_hi for p in message.page_nos):
            raise CorruptionError("a repair push with pages of another PG")
        if any(a >= b for a, b in itertools.pairwise(message.page_nos)) or any(
            not 0 < page_lsn <= repair.lsn for page_lsn in message.page_lsns
        ):
            raise CorruptionError("a repair push whose pages or LSNs are out of order")
        if self.disk is None:
            fresh = set(segment.page_log.missing(message.page_nos))  # not a push seen twice
            for index, page_no in enumerate(message.page_nos):
                if page_no in fresh:
                    image = message.images[index * size : (index + 1) * size]
                    segment.page_log.set_image(page_no, image, message.page_lsns[index])
            return
        old = self.segments.get(message.pg_id)
        durable = old.store_map if old is not None and old.store is not None else None
        store = self.page_store(segment)
        with self._stopping_on_disk_error("segment repair"):
            written = store.write(
                message.page_nos,
                message.page_lsns,
                message.images,
                repair.lsn,
                durable or StoreMap(segment.page_lo),
            )
        repair.page_nos += message.page_nos
        repair.slots += [written.slot(page_no) or 0 for page_no in message.page_nos]

    def _install(self, repair: Repair, message: m.HydratePush) -> Outgoing:
        """The last push: the new segment replaces the old one, on disk (checkpoint file
        then an empty log, each atomically) and in memory, then takes the frames."""
        segment = repair.segment
        assert segment is not None
        pg_id, lsn, chain_lsn = segment.pg_id, repair.lsn, message.chain_lsn
        segment.scl = segment.chain_base_lsn = segment.checkpoint_chain_lsn = chain_lsn
        segment.coalesced_lsn = segment.checkpoint_lsn = lsn
        segment.repaired_lsn = lsn
        segment.repaired_folded = clip(self.annulled(), lsn)
        if message.cpl:
            segment.cpl_lsns.append(message.cpl)
            segment.cpl_times.append(message.cpl_time)
            segment.time_floor = message.cpl_time  # commits before it are not indexed here
        segment.truncations = list(self.truncations)
        segment.suspect = True
        segment.suspect_reason = (
            f"repaired from {message.sender} at LSN {lsn}: catching up with its peers"
        )
        old = self.segments.get(pg_id)
        self._resident_total -= self._resident.pop(pg_id, 0)
        self._hot_order.pop(pg_id, None)
        if self.disk is not None:
            store_map = StoreMap(segment.page_lo).with_slots(repair.page_nos, repair.slots)
            pages = checkpoint_object(segment, lsn, chain_lsn, store_map, self.volume_id)
            if lsn > self.vdl_hint:
                # The peer's cutoff is a VDL a writer reached: node.meta says so before
                # the checkpoint lands, or a load would take node.meta for stale.
                self.vdl_hint = lsn
                self._write_meta()
            with self._stopping_on_disk_error("segment repair"):
                self.disk.replace(checkpoint_name(pg_id), pages)
                if old is not None:
                    self._history_in_force(old, None)  # its history files go
                self.disk.replace(log_name(pg_id), b"")
            segment.store, segment.store_map = self.page_store(segment), store_map
            segment.on_chain = self._append_to_disk
            segment.defer_indexing = self.durability == "fsync"
            segment.changed_pages = set()
            segment.on_damage = self._store_damaged
            self._logged_pending.pop(pg_id, None)
        if old is not None:
            old.page_log.close()
        self.segments[pg_id] = segment
        self.dormant.pop(pg_id, None)
        segment.images_grew = True
        if message.frames:
            segment.receive(message.frames)
            segment.persist(bounded=False)
        self._keep_cache(segment)
        out: Outgoing = [(self.writer, m.SegmentState(self.name, pg_id, self.epoch, segment.scl))]
        return out + self._pull_from_peers(segment) + self._ask_vouchers(segment)

    # --- the serving side ----------------------------------------------------------------

    def _pages_at(
        self, segment: Segment, chunk: list[int], lsn: int
    ) -> tuple[list[int], list[int], bytes | bytearray]:
        """(pages, page LSNs, images end to end) of ``chunk`` as of ``lsn``. At the
        segment's checkpoint, with nothing folded since, every version is in its page
        store: read from there, the cache left alone; else materialized (page log)."""
        store = segment.store
        if store is None or lsn != segment.checkpoint_lsn or segment.changed_pages:
            return segment.images_of(chunk, lsn, self.annulled())
        page_nos: list[int] = []
        page_lsns: list[int] = []
        images: list[bytes] = []
        store_map = segment.store_map
        for page_no in chunk:
            slot = store_map.slot(page_no)
            if slot is None:
                continue  # no version at the checkpoint
            try:
                page_lsn, image = store.read(page_no, lsn, slot)
            except (CorruptionError, OSError):
                # Damage: the page log's path reports it and sets the segment aside.
                return segment.images_of(chunk, lsn, self.annulled())
            if page_lsn:
                page_nos.append(page_no)
                page_lsns.append(page_lsn)
                images.append(image)
        return page_nos, page_lsns, b"".join(images)

    def _on_hydrate_pull(self, message: m.HydratePull) -> Outgoing:
        """A chunk of this segment's pages for a repairing peer (LSN 0: cannot serve)."""
        segment = self.awake(message.pg_id) if not self.failed else None
        cannot = m.HydratePush(self.name, message.pg_id, 0, 0, 0, 0.0, (), (), b"", -1)
        if segment is None or segment.failed or segment.suspect or segment.needs_repair:
            return [(message.sender, cannot)]
        lsn = message.lsn or max(segment.coalesced_lsn, segment.chain_base_lsn)
        key = (message.pg_id, lsn)
        pages = self._sources.get(key)
        if pages is None or not message.start:
            self._sources = {k: v for k, v in self._sources.items() if k[0] != message.pg_id}
            pages = self._sources[key] = segment.page_nos()
        chunk = pages[message.start : message.start + HYDRATE_PAGES]
        last = message.start + HYDRATE_PAGES >= len(pages)
        try:
            page_nos, page_lsns, images = self._pages_at(segment, chunk, lsn)
        except (VersionGoneError, CorruptionError, OSError):
            return [(message.sender, cannot)]
        finally:
            self._keep_cache(segment)
        frames: tuple[bytes, ...] = ()
        if lsn < segment.chain_base_lsn:
            return [(message.sender, cannot)]  # the frames above it were collected
        start = bisect.bisect_right(segment.chain_last_lsns, lsn)
        chain_lsn = segment.chain_last_lsns[start - 1] if start else segment.chain_base_lsn
        if last:
            self._sources.pop(key, None)
            frames = tuple(segment.chain_frames[start:])
        index = bisect.bisect_right(segment.cpl_lsns, lsn)
        cpl, cpl_time = (
            (segment.cpl_lsns[index - 1], segment.cpl_times[index - 1]) if index else (0, 0.0)
        )
        push = m.HydratePush(
            self.name,
            message.pg_id,
            lsn,
            chain_lsn,
            cpl,
            cpl_time,
            tuple(page_nos),
            tuple(page_lsns),
            bytes(images),
            -1 if last else message.start + HYDRATE_PAGES,
            frames,
        )
        return [(message.sender, push)]
