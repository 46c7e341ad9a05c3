"""Times and durations written for people: ISO-8601 UTC, and "3 min 20 s".

Shared by the error messages (errors.py) and the clock module, so it imports
nothing of the package.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone


def format_time(seconds: float) -> str:
    """ISO-8601 in UTC, ``2026-12-02T02:23:40Z`` (milliseconds when not whole)."""
    try:
        moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        return f"{seconds!r} (Unix seconds)"
    spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def format_duration(seconds: float) -> str:
    """A distance in time as a person reads it: ``0.25 s``, ``42 s``, ``3 min 20 s``,
    ``2 h 5 min``, ``3 d 4 h``."""
    if not math.isfinite(seconds):
        return f"{seconds} s"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 60:
        return f"{seconds:.3g} s"
    whole = round(seconds)
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60)):
        if whole >= size:
            count, rest = divmod(whole, size)
            part = rest // smaller_size
            return f"{count} {unit}" + (f" {part} {smaller}" if part else "")
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min" + (f" {rest} s" if rest else "")
