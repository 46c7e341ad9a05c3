"""Every error a user of aurora-storage can see.

One base class, :class:`AuroraStorageError`; each subclass names what was
wrong (page number, offset, LSN, byte position, node, time) in its attributes
and its message. Operating errors (bad input, corrupt bytes, a lost quorum)
are raised as these; programmer errors inside the library are assertions.
Errors caused by a bad argument also derive from :class:`ValueError`, so code
that already catches ``ValueError`` keeps working.
"""

from __future__ import annotations

from .timefmt import format_duration, format_time


class AuroraStorageError(Exception):
    """Base class of every error raised by aurora-storage."""


# --- bad arguments -----------------------------------------------------------


class InvalidArgumentError(AuroraStorageError, ValueError):
    """An argument is outside what the volume accepts."""


class ConfigurationError(InvalidArgumentError):
    """A volume option (page size, segment size, window, retention) is invalid."""


class PageOutOfRangeError(InvalidArgumentError):
    """A page number is negative or past the end of the volume."""

    def __init__(self, page_no: int, page_count: int) -> None:
        self.page_no = page_no
        self.page_count = page_count
        super().__init__(f"page {page_no} is outside the volume (pages 0 to {page_count - 1})")


class OffsetOutOfRangeError(InvalidArgumentError):
    """A write does not fit inside its page."""

    def __init__(self, page_no: int, offset: int, length: int, page_size: int) -> None:
        self.page_no = page_no
        self.offset = offset
        self.length = length
        self.page_size = page_size
        super().__init__(
            f"write of {length} bytes at offset {offset} does not fit page {page_no} "
            f"of {page_size} bytes"
        )


class RecordTooLargeError(InvalidArgumentError):
    """A record or a page image has the wrong size."""

    def __init__(self, page_no: int, length: int, limit: int) -> None:
        self.page_no = page_no
        self.length = length
        self.limit = limit
        super().__init__(f"record for page {page_no} has {length} bytes; the limit is {limit}")


# --- corrupt or invalid bytes -------------------------------------------------


class CorruptionError(AuroraStorageError):
    """Bytes read or received break the format (docs/format.md)."""


class InvalidRecordError(CorruptionError):
    """A packed record breaks a validity rule; ``position`` is its byte offset."""

    def __init__(self, reason: str, position: int, field: str) -> None:
        self.reason = reason
        self.position = position
        self.field = field
        super().__init__(f"invalid record at byte {position}: {reason} (field {field})")


class CorruptFrameError(CorruptionError):
    """A frame's header, length or checksum is wrong; ``position`` is a byte offset."""

    def __init__(self, reason: str, position: int) -> None:
        self.reason = reason
        self.position = position
        super().__init__(f"corrupt frame at byte {position}: {reason}")


class FormatVersionError(CorruptionError):
    """A structure or the compiled core has a format version this code does not read."""

    def __init__(self, what: str, found: int, expected: int) -> None:
        self.what = what
        self.found = found
        self.expected = expected
        super().__init__(f"{what} has format version {found}; this library reads {expected}")


# --- the native core ------------------------------------------------------------


class NativeCoreError(AuroraStorageError):
    """The compiled C core is missing, mismatched, or was called wrongly."""


class UnknownNodeError(InvalidArgumentError):
    """A node or AZ name that the cluster does not have."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"no node or AZ named {name!r}; known: {', '.join(known)}")


class PlacementError(InvalidArgumentError):
    """A segment move the placement cannot take: a destination in another AZ than the
    source, one that already holds the PG, a source that holds none, an unknown PG."""


class LsnOutOfRangeError(InvalidArgumentError):
    """A read point above the durable point (VDL) or below zero."""

    def __init__(self, lsn: int, vdl: int) -> None:
        self.lsn = lsn
        self.vdl = vdl
        super().__init__(f"LSN {lsn} is not a readable point: reads go at or below VDL {vdl}")


# --- quorums, epochs, limits --------------------------------------------------------


class QuorumError(AuroraStorageError):
    """Too few segments answered for the operation."""


class MembershipChangeError(QuorumError):
    """A membership change that could not start or finish: another change of the PG is
    running, or too few members took the new membership (``in_doubt``: some may hold
    it; the writer wrote the old one again under a higher epoch where it could)."""

    def __init__(self, pg_id: int, detail: str, in_doubt: bool = False) -> None:
        self.pg_id = pg_id
        self.in_doubt = in_doubt
        super().__init__(f"PG {pg_id}: {detail}")


class WriteQuorumError(QuorumError):
    """A commit did not reach 4 of 6 segments in every protection group it touched.

    The commit is in doubt, not lost or undone: its records may still become
    durable when the missing segments return (gossip and retransmission carry
    them); until then VDL stays below ``lsn`` and the commit is invisible.
    """

    def __init__(self, lsn: int, vdl: int, detail: str) -> None:
        self.lsn = lsn
        self.vdl = vdl
        super().__init__(
            f"commit at LSN {lsn} is not durable (VDL {vdl}): {detail}; it stays invisible "
            "unless the missing segments return"
        )


class DegradedVolumeError(QuorumError):
    """A commit or backtrack asked of a volume that opened degraded; nothing changed.

    Recovery found what is durable on a read quorum but could not put its
    decision (the truncation, the history) on four nodes: the volume serves
    reads and allocates nothing until four nodes take it (each later commit or
    backtrack tries again; restore the nodes, or reopen once they are back).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"the volume is read-only until four nodes can write ({reason}); restore "
            "the failed nodes or reopen once they are back"
        )


class InDoubtError(QuorumError):
    """A commit or backtrack was refused: an earlier one is still in doubt.

    Nothing was changed. While a commit that raised :class:`WriteQuorumError`
    may still become durable (``lsns``), or a backtrack that raised may still be
    found by recovery (``backtrack``, its target time), no later change may
    build on a state that excludes it. Wait with :meth:`Volume.wait_durable`,
    bring the missing nodes back, or close and reopen the volume (recovery then
    decides).
    """

    def __init__(self, lsns: tuple[int, ...], backtrack: float | None) -> None:
        self.lsns = lsns
        self.backtrack = backtrack
        parts = []
        if lsns:
            parts.append(f"commits at LSN {', '.join(map(str, lsns))} are in doubt")
        if backtrack is not None:
            parts.append(f"a backtrack to {format_time(backtrack)} is in doubt")
        super().__init__(
            f"refused, nothing changed: {' and '.join(parts)}; they resolve once a write "
            "quorum answers again (Volume.wait_durable), or at the next open"
        )


class CommitAnnulledError(AuroraStorageError):
    """A commit that was in doubt was annulled by crash recovery: it never became durable."""

    def __init__(self, lsn: int, lo: int, hi: int) -> None:
        self.lsn = lsn
        super().__init__(
            f"LSN {lsn} was annulled by crash recovery (LSNs {lo + 1} to {hi} were never "
            "durable); the commit did not happen"
        )


class BacktrackQuorumError(WriteQuorumError):
    """A backtrack did not reach 4 of 6 nodes: it did not take effect.

    If the history this session keeps could not be rewritten on a write quorum
    either (``in_doubt``), the backtrack stays in doubt: later commits and
    backtracks raise :class:`InDoubtError` until it can.
    """

    def __init__(
        self, target: float, vdl: int, reached: int, in_doubt: bool, failed: str = ""
    ) -> None:
        self.lsn = vdl
        self.vdl = vdl
        self.target = target
        self.in_doubt = in_doubt
        detail = (
            "; it stays in doubt until 4 nodes answer again: later commits and backtracks "
            "raise InDoubtError"
            if in_doubt
            else ""
        )
        QuorumError.__init__(
            self,
            f"the backtrack to {format_time(target)} reached {reached} nodes, 4 needed{failed}; "
            f"it did not take effect{detail}",
        )


class ReadUnavailableError(QuorumError):
    """No segment able to serve the read point answered."""

    def __init__(self, page_no: int, read_point: int, detail: str) -> None:
        self.page_no = page_no
        self.read_point = read_point
        super().__init__(f"page {page_no} at LSN {read_point} cannot be read: {detail}")


class LsnLimitError(AuroraStorageError):
    """Allocating more LSNs would pass VDL + LAL; the writer waits for acks first."""

    def __init__(self, wanted: int, vdl: int, limit: int) -> None:
        self.wanted = wanted
        self.vdl = vdl
        self.limit = limit
        super().__init__(
            f"LSN {wanted} would pass the allocation limit VDL {vdl} + LAL {limit}; "
            "storage is not acknowledging fast enough"
        )


class StaleEpochError(AuroraStorageError):
    """A node rejected a request: a newer writer has taken over the volume."""

    def __init__(self, node: str, epoch: int, reason: str) -> None:
        self.node = node
        self.epoch = epoch
        super().__init__(f"node {node} rejected the request: {reason}")


class VersionGoneError(AuroraStorageError):
    """A page version older than what storage retains (it was coalesced away)."""

    def __init__(self, page_no: int, lsn: int) -> None:
        self.page_no = page_no
        self.lsn = lsn
        super().__init__(
            f"page {page_no} at LSN {lsn} is older than what storage retains; "
            "pin read points with Volume.read_view to keep them"
        )


class WrongNodeError(CorruptionError):
    """A node folder holds another node's or another volume's data."""

    def __init__(self, node: str, found_node: str, found_volume: str) -> None:
        self.node = node
        super().__init__(
            f"the folder of node {node} belongs to node {found_node!r} of volume {found_volume!r}"
        )


class VolumeReadOnlyError(AuroraStorageError):
    """A change (a commit, a backtrack, a staging round, a node restart) asked of a
    volume opened with ``readonly=True``; nothing was changed."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: the volume was opened read-only (readonly=True)")


class VolumeClosedError(AuroraStorageError):
    """An operation on a closed volume."""


class RecoveryError(QuorumError):
    """Crash recovery could not reach the quorums it needs; nothing was changed."""


class StorageWriteError(AuroraStorageError):
    """A write the volume needs failed on disk (full or failing): too few storage nodes
    could write for a new or restored volume to start, or the volume's own
    volume.meta could not be replaced. The message names each failed node or file
    with its OS error.

    A create or restore that fails so leaves nothing behind: free space and try again.
    """


class SegmentRepairNeededError(RecoveryError):
    """A missing node could not be rebuilt: a segment of it still lacks frames its
    peers no longer hold, and no peer could repair it from its pages (none was
    whole and reachable)."""

    def __init__(self, node: str, detail: str) -> None:
        self.node = node
        super().__init__(
            f"node {node} could not be rebuilt from its peers: {detail}; no peer could "
            "repair the segment from its pages (each was down, suspect or unreachable)"
        )


class MessageStormError(AuroraStorageError):
    """A transport delivered more messages in one run than any exchange needs: the
    protocol is livelocked (a bug, or state the protocol does not handle)."""

    def __init__(self, transport: str, deliveries: int) -> None:
        self.deliveries = deliveries
        super().__init__(
            f"{transport} delivered {deliveries} messages in one run without settling: a livelock"
        )


class VolumeNotFoundError(AuroraStorageError):
    """The path holds no volume (no readable volume.meta)."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        super().__init__(f"{path} is not an aurora-storage volume: {detail}")


class VolumeIncompleteError(VolumeNotFoundError):
    """The folder holds a volume whose create or restore never finished (it was killed).

    Nothing in it is a volume: create or restore into the same path again (that
    clears it first), or remove the folder.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        AuroraStorageError.__init__(
            self,
            f"{path} holds a volume whose create or restore did not finish; create or "
            "restore into it again (which clears it), or remove it",
        )


class VolumeExistsError(InvalidArgumentError):
    """Volume.create was given a folder that is not empty."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path} exists and is not empty; open it with Volume.open")


class MissingNodeError(AuroraStorageError):
    """Node folders of the volume are missing (open with rebuild_missing=True to rebuild them)."""

    def __init__(self, path: str, nodes: list[str]) -> None:
        self.path = path
        self.nodes = nodes
        super().__init__(
            f"{path}: node folders missing: {', '.join(nodes)}; Volume.open(path, "
            "rebuild_missing=True) rebuilds them from their peers"
        )


class VolumeInUseError(AuroraStorageError):
    """Another writer has the volume open."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path} is open by another writer")


# --- history: backtrack and restore ---------------------------------------------------


class HistoryError(AuroraStorageError):
    """A backtrack or restore cannot be done as asked; nothing was changed."""


class BacktrackDisabledError(HistoryError):
    """The volume was created with backtrack_window=0; backtrack stays off for good."""

    def __init__(self) -> None:
        super().__init__("backtrack is off: the volume was created with backtrack_window=0")


class TimeOutsideWindowError(HistoryError, ValueError):
    """A target time before the earliest reachable time or after the latest.

    The message gives the times in ISO-8601 UTC and how far outside the window
    the target is; the attributes keep them as seconds.
    """

    def __init__(self, target: float, earliest: float, latest: float, detail: str = "") -> None:
        self.target = target
        self.earliest = earliest
        self.latest = latest
        if target < earliest:
            distance = f"{format_duration(earliest - target)} before it opens"
        elif target > latest:
            distance = f"{format_duration(target - latest)} after it closes"
        else:
            distance = "inside it, but not reachable"
        super().__init__(
            f"time {format_time(target)} is outside the window {format_time(earliest)} .. "
            f"{format_time(latest)} ({distance})" + (f": {detail}" if detail else "")
        )


class RestoreError(HistoryError):
    """A restore cannot be done: objects it needs are missing or do not chain, or the
    backup holds no staged round yet."""


# --- backup store ------------------------------------------------------------------


class InvalidBackupNameError(InvalidArgumentError):
    """A backup object name (or list prefix) breaks the naming rules of docs/format.md."""

    def __init__(self, name: object, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"bad backup object name {name!r}: {reason}")


class BackupObjectMissingError(AuroraStorageError):
    """The backup store holds no object of that name."""

    def __init__(self, name: str, store: str, needed_by: str = "") -> None:
        self.name = name
        self.store = store
        why = f" ({needed_by})" if needed_by else ""
        super().__init__(f"backup object {name!r} is not in {store}{why}")


class BackupCorruptError(CorruptionError):
    """A backup object breaks the validity rule of docs/format.md, "Backup objects"."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"backup object {name!r} is corrupt: {reason}")


class BackupStoreUnavailableError(ConfigurationError):
    """A backup target cannot be opened: a missing package, an unknown URL scheme, a file."""

    def __init__(self, target: str, detail: str) -> None:
        self.target = target
        self.detail = detail
        super().__init__(f"backup store {target!r} cannot be opened: {detail}")
