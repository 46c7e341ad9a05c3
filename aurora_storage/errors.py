"""Every error a user of aurora-storage can see.

One base class, :class:`AuroraStorageError`; each subclass names what was
wrong (page number, offset, LSN, byte position, node, time) in its attributes
and its message. Operating errors (bad input, corrupt bytes, a lost quorum)
are raised as these; programmer errors inside the library are assertions.
Errors caused by a bad argument also derive from :class:`ValueError`, so code
that already catches ``ValueError`` keeps working.
"""

from __future__ import annotations


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
