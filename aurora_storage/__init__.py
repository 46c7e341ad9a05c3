"""aurora-storage: a log-structured, quorum-replicated storage volume with a C core.

The storage layer of Amazon Aurora as the SIGMOD 2017 and 2018 papers describe
it: the writer ships redo records, storage segments materialize pages from
them. See docs/architecture.md for the layers and docs/format.md for every
byte format.
"""

from __future__ import annotations

from . import errors
from .clock import SimulatedClock, WallClock
from .errors import AuroraStorageError
from .protocol.transaction import Transaction
from .volume import Volume

__all__ = [
    "AuroraStorageError",
    "SimulatedClock",
    "Transaction",
    "Volume",
    "WallClock",
    "__version__",
    "errors",
]
__version__ = "0.1.0"
