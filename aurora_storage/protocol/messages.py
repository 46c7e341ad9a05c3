"""Messages between the writer and storage nodes, and between nodes (gossip).

Protocol state machines (segment, node, writer) take these and return these;
a transport moves them. Nothing changes a message once it is built; they are
plain slotted classes rather than frozen ones because a frozen dataclass costs
a microsecond to build and a commit builds a dozen. Frames travel as the bytes of docs/format.md
("Frames"); every other field is a plain value, so a network transport can
encode a message with msgpack (:func:`encode`, :func:`decode`).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Any

import msgpack

from ..errors import CorruptionError


@dataclass(slots=True)
class WriteFrames:
    """Writer -> segment: frames of one PG, in LSN order.

    retain_lsn: no reader needs a version older than this (the minimum read
    point, the backtrack window's start included), so records at or below it
    may be coalesced. fold_lsn: no reader but the backtrack window needs a
    version older than this (-1: as retain_lsn): a node that keeps history on
    disk may fold records up to it (disk_history.py). floor_lsn: every
    segment of the PG holds the chain up to here, so frames at or below it
    need not be kept for gossip.
    """

    epoch: int
    pg_id: int
    frames: tuple[bytes, ...]
    retain_lsn: int = 0
    floor_lsn: int = 0
    truncations: tuple[int, ...] = ()  # flat (epoch, lo, hi) triples in force
    # The sequence of the writer's history key (its epoch is ``epoch``); -1: not
    # said. A node holding another history coalesces nothing and pulls this one.
    history_sequence: int = -1
    fold_lsn: int = -1


@dataclass(slots=True)
class SegmentState:
    """Segment -> writer: the segment's SCL, after a write or after it caught up."""

    node: str
    pg_id: int
    epoch: int
    scl: int


@dataclass(slots=True)
class ReadPage:
    """Writer -> segment: the page as of read_point, annulled ranges excluded.

    required_scl is the last record of the PG at or below read_point as far as
    the writer knows: a segment whose SCL reaches it holds every record needed.
    """

    request_id: int
    pg_id: int
    page_no: int
    read_point: int
    required_scl: int
    annulled: tuple[int, ...]  # flat (lo, hi] pairs


@dataclass(slots=True)
class PageImage:
    """Segment -> writer: the answer to a ReadPage; image is empty when problem is set."""

    request_id: int
    node: str
    page_no: int
    scl: int
    image: bytes
    problem: str


@dataclass(slots=True)
class GossipPull:
    """Segment -> peer: "I hold everything up to scl; send me what follows"."""

    sender: str
    pg_id: int
    scl: int


@dataclass(slots=True)
class GossipPush:
    """Peer -> segment: frames above the puller's SCL, in chain order.

    base_lsn is the pusher's chain base: it collected every frame at or below it.
    A puller whose SCL is below gets no frames (none would join its chain): it
    lacks frames no gossip from this peer can bring.
    """

    sender: str
    pg_id: int
    scl: int
    frames: tuple[bytes, ...]
    base_lsn: int = 0


@dataclass(slots=True)
class CatalogPull:
    """Node -> peer, after a restart: which PGs do you hold, at which SCL?"""

    sender: str


@dataclass(slots=True)
class Catalog:
    """Peer -> node: (pg_id, scl) pairs, flattened, with the peer's epoch and truncations."""

    sender: str
    segments: tuple[int, ...]
    epoch: int = 0
    truncations: tuple[int, ...] = ()


@dataclass(slots=True)
class RecoveryQuery:
    """Recovering writer -> node: take this epoch (durably), then tell me what you hold."""

    epoch: int


@dataclass(slots=True)
class RecoveryState:
    """Node -> recovering writer.

    segments: flat (pg_id, scl, suspect) triples. intervals: flat (pg_id,
    first_lsn, last_lsn, last_cpl) of runs of chain frames with consecutive
    LSNs above the node's VDL hint; last_cpl is the run's highest MTR end, or 0.
    """

    node: str
    epoch: int
    vdl_hint: int
    suspect: int
    truncations: tuple[int, ...]
    segments: tuple[int, ...]
    intervals: tuple[int, ...]
    history: bytes = b""  # msgpack of History.encode()
    problems: tuple[str, ...] = ()  # why the node or some of its segments cannot vouch
    # The PG memberships a change set, as the node holds them (Placement.encode's
    # "changes" rows: [pg, epoch, sequence, member sets]).
    memberships: tuple[Any, ...] = ()


@dataclass(slots=True)
class Truncate:
    """Recovering writer -> node: annul (lo, hi] from this epoch on (durably)."""

    epoch: int
    lo: int
    hi: int


@dataclass(slots=True)
class Truncated:
    """Node -> writer: the truncation of this epoch is durable here."""

    node: str
    epoch: int


@dataclass(slots=True)
class SetHistory:
    """Writer -> node: the volume's whole history (msgpack), to keep durably if its key
    is higher than the node's (history.py)."""

    epoch: int
    history: bytes


@dataclass(slots=True)
class HistorySet:
    """Node -> writer: the node durably holds the history with this key (its own
    if that is higher than the one sent)."""

    node: str
    epoch: int
    version: int
    key_epoch: int = 0
    key_sequence: int = 0


@dataclass(slots=True)
class WindowQuery:
    """Writer -> node: the commits your segments index at or after ``since`` and the
    record bytes their page logs hold (after a reopen: the backtrack window's
    bookkeeping, rebuilt from storage)."""

    request_id: int
    since: float


@dataclass(slots=True)
class WindowAnswer:
    """Node -> writer: CPLs with their times, and flat (pg_id, record bytes) pairs."""

    request_id: int
    node: str
    cpls: tuple[int, ...]
    times: tuple[float, ...]
    record_bytes: tuple[int, ...]
    trusted: int  # 0 when a segment of the node is suspect


@dataclass(slots=True)
class HistoryPull:
    """Node -> writer: send me your history (a write carried another key than mine)."""

    node: str


@dataclass(slots=True)
class TimeQuery:
    """Writer -> node: your last commit at or before ``moment``, outside ``annulled``."""

    request_id: int
    moment: float
    annulled: tuple[int, ...]


@dataclass(slots=True)
class TimeAnswer:
    """Node -> writer: the latest such CPL over the node's segments (0 if none)."""

    request_id: int
    node: str
    cpl: int
    time: float
    trusted: int  # 0 when a segment of the node is suspect
    # Earliest moment the node's time indexes answer for (older entries were
    # dropped; -inf: none were) and the highest LSN any of its segments folded
    # into page images: a backtrack may land neither before nor below these.
    floor_time: float = float("-inf")
    folded_lsn: int = 0


@dataclass(slots=True)
class Stage:
    """Writer -> one node per PG: upload the PG's frames in (from_lsn, upto_lsn] as a LOG
    object, or, with snapshot set, the PG's pages at upto_lsn as a PAGES object."""

    request_id: int
    pg_id: int
    from_lsn: int
    upto_lsn: int
    required_scl: int  # the PG's last record at or below upto_lsn: the segment must hold it
    snapshot: int
    annulled: tuple[int, ...]


@dataclass(slots=True)
class Staged:
    """Node -> writer: the object is in the backup store (problem empty), or why not."""

    request_id: int
    node: str
    pg_id: int
    upto_lsn: int
    name: str
    size: int
    cpls: tuple[int, ...]
    times: tuple[float, ...]
    problem: str


@dataclass(slots=True)
class Rejected:
    """Node -> sender: a request carried an epoch older than the node's."""

    node: str
    epoch: int
    reason: str


@dataclass(slots=True)
class Maintain:
    """Writer -> node: the coalescing and gossip floors of PGs written earlier, whose
    acks raised them since (a WriteFrames carries them for the PGs it writes):
    flat (pg_id, retain_lsn, floor_lsn) triples, as in WriteFrames. It lets a
    quiet PG's segments fold their records, drop frames every peer holds and
    checkpoint, though nothing writes to the PG again. ``folds``: each PG's fold_lsn,
    in the order of the triples (empty: as their retain_lsn)."""

    epoch: int
    floors: tuple[int, ...]
    history_sequence: int = -1
    folds: tuple[int, ...] = ()


@dataclass(slots=True)
class FloorPull:
    """Node -> writer: the floors of these PGs, please. Sent by a node whose budget
    of unfolded records is spent while segments' floors are too old to fold them (a
    Maintain lost, or held back by a read view or a backup not yet staged); the
    writer answers with a Maintain naming their floors as they are now."""

    node: str
    pg_ids: tuple[int, ...]


@dataclass(slots=True)
class HydratePull:
    """Segment -> peer: a segment repair. The PG's pages as of ``lsn`` (0: a point the
    peer picks), from position ``start`` of its ascending page list on; after the
    last of them, its chain frames above that point. Sent by a segment whose peers
    collected the frames it lacks, which no gossip can bring."""

    sender: str
    pg_id: int
    lsn: int
    start: int


@dataclass(slots=True)
class HydratePush:
    """Peer -> segment: up to HYDRATE_PAGES pages of the PG as of ``lsn`` (images end
    to end, each with the LSN of its last change), and ``cpl``/``cpl_time``, the
    PG's last commit at or below ``lsn``. ``next_start`` is where the next pull
    starts; -1 on the last push, which carries the chain frames above ``lsn``.
    ``lsn`` 0: the peer cannot serve that point (it folded past it): start again.
    ``chain_lsn``: the PG's chain position at ``lsn`` (the last LSN of its frame at or
    below it), where the frames above continue the chain."""

    sender: str
    pg_id: int
    lsn: int
    chain_lsn: int
    cpl: int
    cpl_time: float
    page_nos: tuple[int, ...]
    page_lsns: tuple[int, ...]
    images: bytes
    next_start: int
    frames: tuple[bytes, ...] = ()


@dataclass(slots=True)
class SetMembers:
    """Writer -> node: the PG's membership (placement.py), to keep durably if its epoch
    is above the node's. ``source`` is a member a new member copies its pages from
    (hydration.py); empty: any peer."""

    epoch: int
    pg_id: int
    member_epoch: tuple[int, ...]  # (volume epoch of the change, sequence)
    member_sets: tuple[tuple[str, ...], ...]
    source: str = ""


@dataclass(slots=True)
class MembersSet:
    """Node -> writer: the node durably holds the PG's membership of this epoch (its
    own, if that is higher than the one sent)."""

    node: str
    epoch: int
    pg_id: int
    member_epoch: tuple[int, ...]


@dataclass(slots=True)
class Tick:
    """Transport -> node: time passed; run background steps (gossip, coalesce)."""


Message = (
    WriteFrames
    | SegmentState
    | ReadPage
    | PageImage
    | GossipPull
    | GossipPush
    | CatalogPull
    | Catalog
    | Rejected
    | Tick
    | RecoveryQuery
    | RecoveryState
    | Truncate
    | Truncated
    | SetHistory
    | HistorySet
    | TimeQuery
    | TimeAnswer
    | Stage
    | Staged
    | HistoryPull
    | WindowQuery
    | WindowAnswer
    | Maintain
    | FloorPull
    | HydratePull
    | HydratePush
    | SetMembers
    | MembersSet
)

_TYPES: tuple[type[Any], ...] = (
    WriteFrames,
    SegmentState,
    ReadPage,
    PageImage,
    GossipPull,
    GossipPush,
    CatalogPull,
    Catalog,
    Rejected,
    Tick,
    RecoveryQuery,
    RecoveryState,
    Truncate,
    Truncated,
    SetHistory,
    HistorySet,
    TimeQuery,
    TimeAnswer,
    Stage,
    Staged,
    HistoryPull,
    WindowQuery,
    WindowAnswer,
    Maintain,  # tags are positions: new kinds go last
    FloorPull,
    HydratePull,
    HydratePush,
    SetMembers,
    MembersSet,
)
_TAGS = {kind: tag for tag, kind in enumerate(_TYPES)}


def encode(message: Message) -> bytes:
    """msgpack of [type tag, fields...] (docs/format.md, "Messages")."""
    return bytes(msgpack.packb([_TAGS[type(message)], *astuple(message)], use_bin_type=True))


def decode(data: bytes) -> Message:
    try:
        tag, *fields = msgpack.unpackb(data, raw=False, use_list=True)
        kind = _TYPES[tag]
        converted = [tuple(field) if isinstance(field, list) else field for field in fields]
        message: Message = kind(*converted)
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as error:
        raise CorruptionError(f"undecodable message: {error}") from None
    return message
