"""Argument checks shared by every public entry point.

Each function returns the value in its canonical type or raises an
:class:`InvalidArgumentError` subclass naming the argument: a wrong type is
bad input like a wrong value, never a bare ``TypeError`` from deep inside.
``bool`` is refused wherever an integer is expected (``True`` is not page 1).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .clock import to_duration
from .errors import ConfigurationError, InvalidArgumentError


def integer(name: str, value: Any, error: type[InvalidArgumentError] = ConfigurationError) -> int:
    """``value`` as an int; any integral type but bool (numpy's too)."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise error(f"{name} must be an integer, not {value!r}")
    return int(value.__index__())


def seconds(name: str, value: Any, error: type[InvalidArgumentError] = ConfigurationError) -> float:
    """``value`` as finite float seconds (an int, a float or a ``timedelta``:
    clock.to_duration), raised as ``error`` when it is not one."""
    try:
        return to_duration(value, name)
    except InvalidArgumentError as problem:
        raise error(str(problem)) from None


def number(name: str, value: Any) -> float:
    """``value`` as a finite float (an int or a float, not bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number, not {value!r}")
    return float(value)


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigurationError(f"{name} {value!r} is not one of {', '.join(choices)}")
    return value


def path(value: Any) -> Path:
    """A volume's folder: a str or os.PathLike naming a file system path."""
    if not isinstance(value, str | os.PathLike):
        raise InvalidArgumentError(f"a volume path is a str or a path, not {value!r}")
    text = os.fspath(value)
    if isinstance(text, bytes):
        raise InvalidArgumentError(f"a volume path is text, not bytes ({value!r})")
    if not text:
        raise InvalidArgumentError("a volume path cannot be empty")
    if "\x00" in text:
        raise InvalidArgumentError(f"a volume path cannot hold a NUL character ({text!r})")
    return Path(text)


def lsn(name: str, value: Any) -> int:
    """An LSN: an int >= 0."""
    result = integer(name, value, InvalidArgumentError)
    if result < 0:
        raise InvalidArgumentError(f"{name} must be >= 0, not {result}")
    return result
