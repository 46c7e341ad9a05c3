"""Visible history: which LSNs a read sees, version by version, and when each began.

One mechanism serves crash recovery, backtrack and restore (DESIGN.md
section 2): the visible history of a volume is the set of LSNs not annulled.

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
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from .errors import CorruptionError


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


def flatten_truncations(truncations: list[tuple[int, int, int]]) -> tuple[int, ...]:
    """(epoch, lo, hi) triples as the flat tuple messages and metadata carry."""
    return tuple(value for truncation in truncations for value in truncation)


def truncation_triples(flat: tuple[int, ...]) -> list[tuple[int, int, int]]:
    return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]


def truncation_ranges(truncations: list[tuple[int, int, int]]) -> tuple[int, ...]:
    return merge_ranges(tuple(value for _, lo, hi in truncations for value in (lo, hi)))


class History:
    """The versions of a volume's visible history, oldest first."""

    def __init__(self, versions: list[HistoryVersion]) -> None:
        assert versions, "a history starts with the version made at creation"
        self.versions = sorted(versions, key=lambda version: version.version)
        self._times = [version.created_at for version in self.versions]

    @classmethod
    def new(cls, created_at: float) -> History:
        return cls([HistoryVersion(0, created_at, (), "create")])

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
        return [version.encode() for version in self.versions]

    @classmethod
    def decode(cls, encoded: list[Any]) -> History:
        if not encoded:
            raise CorruptionError("a history with no version")
        return cls([HistoryVersion.decode(fields) for fields in encoded])

    def merged_with(self, other: History) -> History:
        """Union by version number; the newer source wins nothing (versions are immutable)."""
        by_number = {version.version: version for version in self.versions}
        for version in other.versions:
            by_number.setdefault(version.version, version)
        return History(list(by_number.values()))
