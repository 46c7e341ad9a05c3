"""Clocks: the wall clock and a simulated clock that moves only when told.

Every component that needs the time takes a clock; nothing reads the system
time directly. Times are float seconds (Unix time on the wall clock).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol

from .errors import InvalidArgumentError


class Clock(Protocol):
    def now(self) -> float: ...


class WallClock:
    """Unix time from the operating system."""

    def now(self) -> float:
        return time.time()


class SimulatedClock:
    """A clock for tests and simulations: ``advance`` moves it, nothing else does."""

    def __init__(self, start: float | datetime = 0.0) -> None:
        self._now = to_seconds(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise InvalidArgumentError(f"a clock cannot go back ({seconds} seconds)")
        self._now += seconds
        return self._now

    def set(self, moment: float | datetime) -> float:
        """Moves the clock forward to ``moment``."""
        target = to_seconds(moment)
        if target < self._now:
            raise InvalidArgumentError(f"a clock cannot go back (from {self._now} to {target})")
        self._now = target
        return self._now


def to_seconds(moment: float | int | datetime) -> float:
    """Float seconds from a number or a ``datetime`` (naive ones are taken as UTC)."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    if isinstance(moment, bool) or not isinstance(moment, int | float):
        raise InvalidArgumentError(f"a time must be seconds or a datetime, not {moment!r}")
    return float(moment)
