"""Visible history: which LSNs a read sees, version by version, and when each began.

One mechanism serves crash recovery, backtrack and restore
(docs/architecture.md, "History: backtrack and restore"): the visible history
of a volume is the set of LSNs not annulled.

- A *truncation* (epoch, lo, hi) comes from crash recovery: (lo, hi] held only
  records no commit acknowledged. It applies to every version, forever, and
  segments rewind their chains past it.
- A *history version* is what backtrack changes: the ranges it hides, and the
  writer-clock time it took effect. Backtrack to time T takes the version in
  effect at T, hides everything after the last commit at or before T, and
  adds the result as a new version. Versions are never removed while the
  window needs them, so a later backtrack can move forward again: the
  version in effect at any earlier time still shows what was visible then.
  Hidden records stay in segments' chains (the chain is physical); only
  reads skip them.

The time index itself is distributed: every segment keeps, for each MTR that
ended in its PG, the CPL's LSN and writer time (from the CPL record), and
answers "last commit at or before T outside these ranges" by bisection.

The history is a register replicated on the storage nodes, written whole by
the writer to a write quorum. Each write carries a *key* (the writer's epoch,
then a sequence number within it); a node keeps the history with the highest
key it has seen, and recovery adopts the highest key a read quorum holds,
then writes it back under its own epoch. Any read quorum meets the write
quorum of the last successful write, so a history change that reached fewer
nodes (a backtrack that failed) is adopted by a later recovery only while it
is still the newest write; a writer that goes on without it first writes the
history it keeps instead, under a higher key, which no recovery can miss.
The history also records, once, at creation, the backtrack window the
volume was made with (0: off for good) and when its history begins, so that
neither lives in one file only.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import CorruptionError


@dataclass(frozen=True)
class HistoryVersion:
    version: int
    created_at: float  # writer clock seconds when it took effect
    annulled: tuple[int, ...]  # flat, merged (lo, hi] pairs hidden by backtracks
    reason: str  # "create" or "backtrack"

    def encode(self) -> list[Any]:
        return [self.version, self.created_at, list(self.annulled), self.reason]

    @classmethod
    def decode(cls, fields: list[Any]) -> HistoryVersion:
        try:
            version, created_at, annulled, reason = fields
            return cls(
                int(version), float(created_at), tuple(int(v) for v in annulled), str(reason)
            )
        except (TypeError, ValueError) as error:
            raise CorruptionError(f"bad history version {fields!r}: {error}") from None


def merge_ranges(*flats: tuple[int, ...]) -> tuple[int, ...]:
    """Union of flat (lo, hi] pair lists, sorted and merged, as the C core wants them."""
    pairs = sorted(
        (flat[i], flat[i + 1])
        for flat in flats
        for i in range(0, len(flat), 2)
        if flat[i] < flat[i + 1]
    )
    merged: list[list[int]] = []
    for lo, hi in pairs:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple(value for pair in merged for value in pair)


def inside(lsn: int, annulled: tuple[int, ...]) -> bool:
    """True if ``lsn`` lies in one of the flat (lo, hi] ranges."""
    return any(annulled[i] < lsn <= annulled[i + 1] for i in range(0, len(annulled), 2))


def flatten_truncations(truncations: list[tuple[int, int, int]]) -> tuple[int, ...]:
    """(epoch, lo, hi) triples as the flat tuple messages and metadata carry."""
    return tuple(value for truncation in truncations for value in truncation)


def truncation_triples(flat: tuple[int, ...]) -> list[tuple[int, int, int]]:
    return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]


def truncation_ranges(truncations: list[tuple[int, int, int]]) -> tuple[int, ...]:
    return merge_ranges(tuple(value for _, lo, hi in truncations for value in (lo, hi)))


NO_KEY = (0, 0)  # the key of a history no writer has written yet (or an old node's)


class History:
    """The versions of a volume's visible history, oldest first.

    ``key`` is (epoch, sequence) of the write that stored it on the nodes;
    ``backtrack_window`` the window in seconds the volume was created with (0:
    backtrack off for good; None: not recorded, an older volume) and
    ``begins_at`` the time the volume's history begins (its creation).
    """

    def __init__(
        self,
        versions: list[HistoryVersion],
        key: tuple[int, int] = NO_KEY,
        backtrack_window: float | None = None,
        begins_at: float | None = None,
    ) -> None:
        assert versions, "a history starts with the version made at creation"
        self.versions = sorted(versions, key=lambda version: version.version)
        self._times = [version.created_at for version in self.versions]
        self.key = key
        self.backtrack_window = backtrack_window
        self.begins_at = self.versions[0].created_at if begins_at is None else begins_at

    @classmethod
    def new(cls, created_at: float, backtrack_window: float | None = None) -> History:
        return cls(
            [HistoryVersion(0, created_at, (), "create")],
            NO_KEY,
            backtrack_window,
            created_at,
        )

    def keyed(self, key: tuple[int, int]) -> History:
        """The same history, as stored by the write with ``key``."""
        return History(list(self.versions), key, self.backtrack_window, self.begins_at)

    def with_version(self, version: HistoryVersion, key: tuple[int, int]) -> History:
        """A new history: this one with ``version`` added, stored under ``key``."""
        return History([*self.versions, version], key, self.backtrack_window, self.begins_at)

    @property
    def current(self) -> HistoryVersion:
        return self.versions[-1]

    @property
    def created_at(self) -> float:
        return self.versions[0].created_at

    def at(self, moment: float) -> HistoryVersion | None:
        """The version in effect at ``moment`` (None before the volume existed)."""
        index = bisect.bisect_right(self._times, moment)
        return self.versions[index - 1] if index else None

    def add(self, version: HistoryVersion) -> None:
        assert version.version == self.current.version + 1
        assert version.created_at >= self.current.created_at
        self.versions.append(version)
        self._times.append(version.created_at)

    def forget_before(self, moment: float) -> None:
        """Drops versions no time at or after ``moment`` can need (keeps the one in effect)."""
        index = bisect.bisect_right(self._times, moment) - 1
        if index > 0:
            del self.versions[:index]
            del self._times[:index]

    def encode(self) -> list[list[Any]]:
        """The versions alone (the backup's history object carries these)."""
        return [version.encode() for version in self.versions]

    @classmethod
    def decode(cls, encoded: list[Any]) -> History:
        if not encoded:
            raise CorruptionError("a history with no version")
        return cls([HistoryVersion.decode(fields) for fields in encoded])

    def encode_state(self) -> dict[str, Any]:
        """Everything nodes keep (docs/format.md, node.meta ``history``)."""
        return {
            "versions": self.encode(),
            "key": list(self.key),
            "backtrack_window": self.backtrack_window,
            "begins_at": self.begins_at,
        }

    @classmethod
    def decode_state(cls, encoded: Any) -> History:
        """A history as :meth:`encode_state` wrote it, or as older nodes kept it (the
        list of versions alone: no key, no recorded window)."""
        if isinstance(encoded, list):
            return cls.decode(encoded)
        try:
            epoch, sequence = encoded["key"]
            window = encoded.get("backtrack_window")
            history = cls.decode(encoded["versions"])
            return cls(
                history.versions,
                (int(epoch), int(sequence)),
                None if window is None else float(window),
                float(encoded.get("begins_at", history.begins_at)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CorruptionError(f"bad history {encoded!r:.200}: {error}") from None

    def merged_with(self, other: History) -> History:
        """Union by version number, for histories no writer keyed (older nodes)."""
        by_number = {version.version: version for version in self.versions}
        for version in other.versions:
            by_number.setdefault(version.version, version)
        return History(
            list(by_number.values()),
            max(self.key, other.key),
            self.backtrack_window if self.backtrack_window is not None else other.backtrack_window,
            min(self.begins_at, other.begins_at),
        )


def newest(histories: list[History]) -> History | None:
    """The history recovery adopts from what a read quorum holds: the highest key.

    Histories without a key (nodes of an older version) are merged, as they were.
    """
    if not histories:
        return None
    keyed = [history for history in histories if history.key != NO_KEY]
    if keyed:
        return max(keyed, key=lambda history: (history.key, history.current.version))
    merged = histories[0]
    for history in histories[1:]:
        merged = merged.merged_with(history)
    return merged


def encode_history(history: History | None) -> bytes:
    encoded = history.encode_state() if history is not None else []
    return bytes(msgpack.packb(encoded, use_bin_type=True))


def decode_history(data: bytes) -> History | None:
    """The history a message carries, or None when the sender knows none yet."""
    try:
        encoded = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise CorruptionError(f"undecodable history: {error}") from None
    return History.decode_state(encoded) if encoded else None
