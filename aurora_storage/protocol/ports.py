"""What the protocol needs of the world, as interfaces the runtime implements.

A storage node keeps its files through a :class:`Disk` (runtime/disk.py:
RealDisk on the file system, SimulatedDisk in memory with crash faults):
exactly what its persistence needs, and nothing that would tie the
protocol to a file system, a thread or a descriptor.
"""

from __future__ import annotations

from typing import Protocol


class Disk(Protocol):
    def append(self, name: str, data: bytes | bytearray | memoryview) -> int: ...

    def sync(self, name: str) -> None: ...

    def sync_files(self, names: list[str]) -> None: ...

    def read(self, name: str) -> bytes: ...

    def write_at(self, name: str, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Writes ``data`` at ``offset`` (the file grows, with a hole where never written);
        durable once :meth:`sync` returns."""
        ...

    def read_at(self, name: str, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``: fewer past the end, zeros in a hole."""
        ...

    def data_ranges(self, name: str) -> list[tuple[int, int]]:
        """(start, end) of each stretch of the file that may hold data, ascending: the
        rest is holes, which read as zeros (a scrub of a sparse file skips them)."""
        ...

    def replace(self, name: str, data: bytes) -> None: ...

    def link(self, name: str, new_name: str) -> None:
        """``new_name`` names what ``name`` holds now, without copying it (a hard link
        where the file system has them); the name is durable on return, the bytes as
        durable as ``name``'s were. Only for a file its owner replaces next, never
        writes in place: a hard link would show the write under both names."""
        ...

    def exists(self, name: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def remove(self, name: str) -> None: ...

    def truncate(self, name: str, size: int) -> None: ...

    def size(self, name: str) -> int: ...
