"""Clocks, and the times and durations users give: one layer for the library and the CLI.

Every component that needs the time takes a clock; nothing reads the system
time directly. Times are float seconds (Unix time on the wall clock).

What a user may pass, everywhere (``Volume``, ``SimulatedClock``, the CLI):

- a *time*: Unix seconds (int or float); a ``datetime``; or a str: ISO-8601
  as python-dateutil's ``isoparse`` reads it (``2026-12-02T02:23:40Z``,
  ``2026-12-02T03:23+01:00``, ``2026-12-02``), ``now``, a time relative to
  now (``-2h``, ``+30m``, ``-1.5d``, ``-45s``), or Unix seconds as digits.
  A time without a zone (a naive ``datetime``, an ISO-8601 str without ``Z``
  or an offset) is local time, as ``datetime.timestamp()`` reads it.
  Operations with a window (backtrack, restore) also take ``earliest`` and
  ``latest``, resolved against their window when they run
  (:func:`parse_target`, :func:`resolve_target`).
- a *duration*: seconds (int or float) or a ``timedelta`` (:func:`to_duration`).

Errors print times as ISO-8601 UTC (:func:`format_time`) and distances as
``2 h 5 min`` (:func:`format_duration`). Invariant: a str is read by exactly
one parser (:func:`to_seconds`), whether it came from Python or a command line.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime, timedelta
from typing import Literal, Protocol

from dateutil.parser import isoparse

from .errors import InvalidArgumentError
from .timefmt import format_duration as format_duration
from .timefmt import format_time as format_time

Moment = float | int | datetime | str  # what a time may be given as
Duration = float | int | timedelta  # what a duration may be given as
WindowEnd = Literal["earliest", "latest"]
WINDOW_ENDS: tuple[WindowEnd, ...] = ("earliest", "latest")

_RELATIVE = re.compile(r"([+-])(\d+(?:\.\d+)?|\.\d+)([smhd])")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_TIME_FORMS = "ISO-8601 (2026-12-02T02:23:40Z), now, -2h / -30m / -1d / -45s, or Unix seconds"


class Clock(Protocol):
    def now(self) -> float: ...


class WallClock:
    """Unix time from the operating system."""

    def now(self) -> float:
        return time.time()


class SimulatedClock:
    """A clock for tests and simulations: ``advance`` moves it, nothing else does."""

    def __init__(self, start: Moment = 0.0) -> None:
        self._now = to_seconds(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: Duration) -> float:
        step = to_duration(seconds, "advance")
        if step < 0:
            raise InvalidArgumentError(f"a clock cannot go back ({step} seconds)")
        self._now += step
        return self._now

    def set(self, moment: Moment) -> float:
        """Moves the clock forward to ``moment``."""
        target = to_seconds(moment, now=self._now)
        if target < self._now:
            raise InvalidArgumentError(
                f"a clock cannot go back (from {format_time(self._now)} to {format_time(target)})"
            )
        self._now = target
        return self._now

    def __repr__(self) -> str:
        return f"SimulatedClock({format_time(self._now)})"


# --- reading times and durations ----------------------------------------------------


def to_seconds(moment: Moment, now: float | None = None) -> float:
    """Float seconds from a time as users give it (see the module docstring).

    ``now`` anchors ``now`` and relative forms (default: the wall clock).
    Raises InvalidArgumentError naming the value for anything else.
    """
    if isinstance(moment, datetime):
        # A naive datetime is local time, as the standard library reads it.
        return moment.timestamp()
    if isinstance(moment, str):
        return _parse(moment, now)
    if isinstance(moment, bool) or not isinstance(moment, int | float):
        raise InvalidArgumentError(
            f"a time is seconds, a datetime or a str ({_TIME_FORMS}), not {moment!r}"
        )
    if not math.isfinite(moment):
        raise InvalidArgumentError(f"a time must be finite, not {moment!r}")
    return float(moment)


def _parse(text: str, now: float | None) -> float:
    value = text.strip()
    if value.lower() == "now":
        return WallClock().now() if now is None else now
    relative = _RELATIVE.fullmatch(value)
    if relative:
        sign = -1.0 if relative.group(1) == "-" else 1.0
        base = WallClock().now() if now is None else now
        return base + sign * float(relative.group(2)) * _UNIT_SECONDS[relative.group(3)]
    if _NUMBER.fullmatch(value):
        return to_seconds(float(value))
    if value.lower() in WINDOW_ENDS:
        raise InvalidArgumentError(
            f"time {text!r} names an end of a window: only backtrack and restore take it"
        )
    try:
        moment = isoparse(value)
    except (ValueError, OverflowError) as error:
        raise InvalidArgumentError(
            f"cannot read time {text!r} ({error}): use {_TIME_FORMS}"
        ) from None
    try:
        return moment.timestamp()
    except (ValueError, OverflowError, OSError) as error:
        raise InvalidArgumentError(f"time {text!r} is out of range ({error})") from None


def parse_target(target: Moment) -> float | WindowEnd:
    """A time for an operation with a window: ``"earliest"``, ``"latest"``, or a time.

    Relative forms and ``now`` are read against the wall clock; use
    :func:`resolve_target` with the operation's own clock instead where it has one.
    """
    if isinstance(target, str) and target.strip().lower() in WINDOW_ENDS:
        end: WindowEnd = "earliest" if target.strip().lower() == "earliest" else "latest"
        return end
    return to_seconds(target)


def resolve_target(
    target: Moment, earliest: float, latest: float, now: float | None = None
) -> float:
    """``target`` as seconds, ``earliest``/``latest`` taken from the window given."""
    if isinstance(target, str) and target.strip().lower() in WINDOW_ENDS:
        return earliest if target.strip().lower() == "earliest" else latest
    return to_seconds(target, now)


def to_duration(value: Duration, name: str = "duration") -> float:
    """Float seconds from a duration: seconds (int or float) or a ``timedelta``;
    finite (NaN and infinity are no durations)."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{name} is a duration: seconds or a timedelta, not {value!r}")
    if not math.isfinite(value):
        raise InvalidArgumentError(f"{name} must be a finite number of seconds, not {value!r}")
    return float(value)


# --- writing times and durations ----------------------------------------------------
