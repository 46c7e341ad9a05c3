"""Volume options, geometry and limits: what a volume is made of, checked in one place.

Constants name every limit the volume enforces (sizes, windows, timeouts,
the six node names in three AZs). :class:`VolumeOptions` checks and
canonicalizes the options of ``Volume.create`` (types too, checks.py);
:class:`Geometry` maps pages onto protection groups. No state, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import checks, native
from .clock import Clock, SimulatedClock, WallClock
from .errors import ConfigurationError

KIB = 1024
GIB = 1024**3
TIB = 1024**4
PAGE_SIZE_DEFAULT = 16 * KIB
SEGMENT_SIZE_DEFAULT = 10 * GIB
CAPACITY_MAX = 128 * TIB
LAL_DEFAULT = 10_000_000
CACHE_BYTES_DEFAULT = 256 * 1024 * 1024  # page images in memory, the six nodes together
CACHE_BYTES_MIN = 1024 * 1024
COMMIT_TIMEOUT = 10.0  # seconds of transport time a commit waits for its quorum
READ_HEDGE_DELAY = 0.02  # seconds before a read is also asked of the next segment
READ_TIMEOUT = 5.0
AZS = ("az1", "az2", "az3")
NODES_DEFAULT = 6  # storage nodes of a volume unless create says otherwise
NODES_MAX = 78  # 26 per AZ: a letter names each
REPAIR_AFTER_DEFAULT = 10.0  # seconds a node may be unreachable before its segments move


def node_names(count: int) -> tuple[str, ...]:
    """The names of a fleet of ``count`` nodes (a multiple of three), AZ by AZ:
    ``az1-a``, ``az1-b``, ..., ``az3-<letter>``; a node's AZ is its name's prefix."""
    per_az = count // len(AZS)
    return tuple(f"{az}-{chr(ord('a') + i)}" for az in AZS for i in range(per_az))


def az_of(name: str) -> str:
    return name.split("-", 1)[0]


def check_node_count(count: object) -> int:
    """``count`` as a fleet size (a multiple of 3 from 6 to NODES_MAX), else
    ConfigurationError."""
    if isinstance(count, bool) or not isinstance(count, int):
        raise ConfigurationError(f"nodes is a number of storage nodes, not {count!r}")
    if count < NODES_DEFAULT or count % len(AZS) or count > NODES_MAX:
        raise ConfigurationError(
            f"nodes {count} must be a multiple of 3 from {NODES_DEFAULT} to {NODES_MAX} "
            "(a third of them in each AZ)"
        )
    return count


NODE_NAMES = node_names(NODES_DEFAULT)  # the default fleet
DURABILITY_MODES = ("fsync", "os", "memory")
# "wall": Unix time; "simulated": a SimulatedClock's; "other": a clock of the caller's.
# A volume's times are on the clock it was made with (tools on the wall clock check it).
CLOCK_KINDS = ("wall", "simulated", "other")
BACKTRACK_WINDOW_MAX = 72 * 3600.0


@dataclass(frozen=True)
class Geometry:
    """How the volume's pages map onto protection groups."""

    page_size: int
    pages_per_pg: int
    page_count: int

    def pg_of(self, page_no: int) -> int:
        return page_no // self.pages_per_pg

    def page_range(self, pg_id: int) -> tuple[int, int]:
        first = pg_id * self.pages_per_pg
        return first, min(first + self.pages_per_pg, self.page_count)


@dataclass
class VolumeOptions:
    page_size: int = PAGE_SIZE_DEFAULT
    segment_size: int = SEGMENT_SIZE_DEFAULT
    capacity: int = CAPACITY_MAX
    durability: str = "memory"
    lal: int = LAL_DEFAULT
    backend: str | None = None
    commit_timeout: float = COMMIT_TIMEOUT
    backtrack_window: float = 0.0  # seconds; 0 turns backtrack off for good
    backtrack_budget: int = 0  # bytes of change records the window may hold; 0: no limit
    clock: str = "wall"  # the kind of clock the volume was made with (CLOCK_KINDS)
    # Bytes of page images the nodes keep in memory, all six together, once their
    # pages are in page stores (a setting of this process: not recorded).
    cache_bytes: int = CACHE_BYTES_DEFAULT
    nodes: int = NODES_DEFAULT  # storage nodes at create, a third per AZ
    # The placement's record in volume.meta (protocol/placement.py), once a volume
    # has one; None: the default placement over ``nodes`` nodes.
    placement: dict[str, Any] | None = None
    # Seconds on the volume's clock a node may be unreachable before its segments are
    # repaired on other nodes (None: never; a setting of this process: not recorded).
    repair_after: float | None = REPAIR_AFTER_DEFAULT

    @classmethod
    def for_create(
        cls, durability: str | None, clock: str, has_path: bool, **fields: Any
    ) -> VolumeOptions:
        """The checked options of a new volume (``fields`` by name); ``durability``
        defaults to ``"fsync"`` with a path (or disks), ``"memory"`` without, and only
        memory needs none."""
        if durability is None:
            durability = "fsync" if has_path else "memory"
        options = cls(durability=durability, clock=clock, **fields)
        options.check()
        if durability != "memory" and not has_path:
            raise ConfigurationError(f"durability {durability!r} needs a path")
        return options

    def check(self) -> None:
        """Validates every option (types too) and puts each in its canonical type."""
        self.page_size = checks.integer("page_size", self.page_size)
        self.segment_size = checks.integer("segment_size", self.segment_size)
        self.capacity = checks.integer("capacity", self.capacity)
        self.lal = checks.integer("lal", self.lal)
        self.backtrack_budget = checks.integer("backtrack_budget", self.backtrack_budget)
        self.cache_bytes = checks.integer("cache_bytes", self.cache_bytes)
        self.nodes = check_node_count(self.nodes)
        if self.repair_after is not None:
            self.repair_after = checks.seconds("repair_after", self.repair_after)
            if not self.repair_after > 0:
                raise ConfigurationError(
                    f"repair_after {self.repair_after} must be positive seconds, or None (never)"
                )
        if self.cache_bytes < CACHE_BYTES_MIN:
            raise ConfigurationError(
                f"cache_bytes {self.cache_bytes} must be at least {CACHE_BYTES_MIN} (1 MiB)"
            )
        self.commit_timeout = checks.seconds("commit_timeout", self.commit_timeout)
        self.backtrack_window = checks.seconds("backtrack_window", self.backtrack_window)
        checks.choice("durability", self.durability, DURABILITY_MODES)
        checks.choice("clock", self.clock, CLOCK_KINDS)
        if self.backend is not None:
            checks.choice("backend", self.backend, native.BACKEND_NAMES)
        if not native._check_page_size(self.page_size):
            raise ConfigurationError(
                f"page_size {self.page_size} must be a power of two from 4 KiB to 64 KiB"
            )
        if self.segment_size < self.page_size or self.segment_size % self.page_size:
            raise ConfigurationError(
                f"segment_size {self.segment_size} must be a positive multiple of "
                f"page_size {self.page_size}"
            )
        if not self.page_size <= self.capacity <= CAPACITY_MAX or self.capacity % self.page_size:
            raise ConfigurationError(
                f"capacity {self.capacity} must be a multiple of page_size up to 128 TiB"
            )
        if self.durability not in DURABILITY_MODES:
            raise ConfigurationError(
                f"durability {self.durability!r} is not available; choose from {DURABILITY_MODES}"
            )
        if self.lal < 1:
            raise ConfigurationError(f"lal {self.lal} must be at least 1")
        if not self.commit_timeout > 0:
            raise ConfigurationError(f"commit_timeout {self.commit_timeout} must be positive")
        if not 0 <= self.backtrack_window <= BACKTRACK_WINDOW_MAX:
            raise ConfigurationError(
                f"backtrack_window {self.backtrack_window} s must be 0 (off) to 72 hours"
            )
        if self.backtrack_budget < 0:
            raise ConfigurationError(f"backtrack_budget {self.backtrack_budget} must be >= 0")

    def geometry(self) -> Geometry:
        return Geometry(
            self.page_size, self.segment_size // self.page_size, self.capacity // self.page_size
        )


def clock_kind(clock: Clock) -> str:
    """What volume.meta records of a clock (CLOCK_KINDS)."""
    if isinstance(clock, WallClock):
        return "wall"
    return "simulated" if isinstance(clock, SimulatedClock) else "other"
