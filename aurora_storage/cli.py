"""The ``aurora-storage`` command line.

Each command is one function taking parsed arguments and returning an exit
status. Errors from the library print one line and exit non-zero; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from array import array
from collections.abc import Sequence

from . import log, native
from .errors import AuroraStorageError


def _demo(arguments: argparse.Namespace) -> int:
    """A tour of the redo-apply core: pack records, frame them, verify, apply."""
    page_size = 16384
    batch = log.BatchBuilder()
    backlink = 0
    for lsn, (page_no, offset, data) in enumerate(
        [(7, 0, b"aurora"), (7, 100, b"storage"), (9, 0, b"log is the database")], start=1
    ):
        flags = log.FLAG_CPL if lsn == 3 else 0
        batch.add(lsn, backlink, page_no, log.KIND_WRITE, data, offset, flags, time=1.0)
        backlink = lsn
    frame = log.encode_frame(0, 1, 0, batch.first_lsn, batch.last_lsn, batch.count, batch.buffer)
    decoded = log.decode_frame(frame, page_size)
    print(
        f"frame: {len(frame)} bytes, {decoded.record_count} records, "
        f"LSN {decoded.first_lsn}..{decoded.last_lsn}, checksum verified"
    )
    page_nos = array("Q", [7, 9])
    pages = bytearray(page_size * len(page_nos))
    applied = native.apply(decoded.body, page_size, page_nos, pages, lsn_bound=2)
    print(f"backend {native.backend.name}: applied {applied} records at LSN bound 2")
    checks = [pages[0:6] == b"aurora", pages[100:107] == b"storage", not any(pages[page_size:])]
    applied = native.apply(decoded.body, page_size, page_nos, pages)
    checks.append(pages[page_size : page_size + 19] == b"log is the database")
    print(f"applied {applied} records at the latest LSN; pages verified: {all(checks)}")
    return 0 if all(checks) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aurora-storage",
        description="A log-structured, quorum-replicated storage volume.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a tour of the volume")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    try:
        status: int = arguments.handler(arguments)
    except AuroraStorageError as error:
        if arguments.debug:
            raise
        print(f"aurora-storage: {error}", file=sys.stderr)
        return 1
    return status
