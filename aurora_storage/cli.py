"""The ``aurora-storage`` command line: demo, status, verify, dump, backtrack, restore, bench.

Each command is one function taking parsed arguments and returning an exit
status. Library errors and bad arguments print one line and exit 1 (usage
errors found by argparse exit 2); ``--debug``, anywhere on the line, shows
the traceback instead. A reader that closes the pipe (``status | head -2``)
ends the output quietly. Times are read by clock.py, as the library reads
them: ISO-8601 (local time unless it gives ``Z`` or an offset), ``now``,
relative forms (``-2h``, ``-30m``, ``-1d``, ``-45s``; ``--to -2h`` and
``--to=-2h`` alike), Unix seconds, and for backtrack and restore ``earliest``
and ``latest``. Printed times are ISO-8601 UTC.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, metrics, native, report
from . import demo as demo_module
from .backup.store import StoreLocation
from .clock import format_time, parse_target
from .errors import (
    AuroraStorageError,
    InvalidArgumentError,
    PageOutOfRangeError,
    QuorumError,
)
from .format import frames as log
from .protocol.node_storage import log_name
from .runtime.folder import recorded_clock
from .volume import Volume

TIME_HELP = (
    "ISO-8601 (2026-12-02T02:23:40Z; local time without Z or an offset), now, "
    "relative as -2h / -30m / -1d / -45s, Unix seconds, earliest or latest"
)
# A value that starts with '-' but is a relative time, not an option (--to -2h).
_RELATIVE_VALUE = re.compile(r"-(\d+(\.\d+)?|\.\d+)[smhd]")
_TIME_OPTIONS = ("--to",)


# --- status ---------------------------------------------------------------------------


def _status(arguments: argparse.Namespace) -> int:
    volume = Volume.open(arguments.path, readonly=True)
    try:
        status = volume.status()
    finally:
        volume.close()
    if arguments.prometheus or arguments.openmetrics:
        sys.stdout.write(metrics.exposition(status, openmetrics=arguments.openmetrics).decode())
        return 0
    if arguments.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(f"volume {status['path']}: epoch {status['epoch']}, durability {status['durability']}")
    print(
        f"  LSNs: VDL {status['vdl']}, VCL {status['vcl']}, allocated {status['allocated_lsn']}; "
        f"{status['pg_count']} PGs of {status['pages_per_pg']} pages of {status['page_size']} B; "
        f"{status['bytes_used']:,} bytes used"
    )
    for node in status["nodes"]:
        health = "up" if node["up"] else f"DOWN {node['failed']}".rstrip()
        if node["suspect"]:
            health += " (catching up, not voting)"
        print(
            f"  {node['name']:6} {node['az']}  {health:8} {node['segments']} segments "
            f"({node['placed']} placed), {node['disk_bytes'] or node['memory_bytes']:,} B"
        )
        for line in node["problems"]:
            if line != node["failed"]:
                print(f"         {line}")
    fleet = status["fleet"]
    repair = (
        f"repairs after {fleet['repair_after']:g} s unreachable"
        if fleet["repair_after"] is not None
        else "no repairs"
    )
    added = f" ({', '.join(fleet['added'])} added by repairs)" if fleet["added"] else ""
    print(f"  fleet: {fleet['nodes']} nodes{added}; {repair}")
    for change in fleet["changes"]:
        state = "ready" if change["ready"] else "filling"
        print(
            f"  PG {change['pg']} {change['kind']}: {','.join(change['old'])} -> "
            f"{','.join(change['new'])} ({state})"
        )
    for line in fleet["repair_problems"]:
        print(f"  repair: {line}")
    for pg in status["pgs"]:
        scls = " ".join(f"{node}={scl}" for node, scl in pg["scls"].items())
        print(f"  PG {pg['pg']}: PGCL {pg['pgcl']}  SCL {scls}")
        if len(pg["members"]) > 1:
            sets = " and ".join(",".join(members) for members in pg["members"])
            print(f"         changing membership: writes need 4 of each of {sets}")
    backtrack = status.get("backtrack")
    if backtrack:
        print(
            f"  backtrack window: target {backtrack['window_target_seconds'] / 3600:.1f} h, actual "
            f"{backtrack['window_actual_seconds'] / 3600:.2f} h ({format_time(backtrack['earliest'])}"
            f" .. {format_time(backtrack['latest'])})"
        )
    else:
        print("  backtrack: off")
    backup = status.get("backup")
    if backup is None:
        print("  backup: off")
    elif backup["earliest_restorable"] is None or backup["latest_restorable"] is None:
        print(f"  restorable: nothing yet (retention {backup['retention_days']:g} days)")
    else:
        print(
            f"  restorable: {format_time(backup['earliest_restorable'])} .. "
            f"{format_time(backup['latest_restorable'])} (retention {backup['retention_days']:g} days)"
        )
    return 0


# --- verify ---------------------------------------------------------------------------


def verify_volume(volume: Volume, progress: Callable[[int], None] | None = None) -> list[str]:
    """Every problem the nodes found on their disks, per node and file (StorageNode.load:
    tails cut or to be cut, damaged ranges, misplaced files, lost checkpoints, frames
    fetched from peers), every frame re-verified, every page compared across the
    usable replicas at VDL."""
    problems: list[str] = []
    for node in volume.nodes.values():
        if node.failed:
            problems.append(f"{node.name}: {node.failed}")
            continue
        problems += [f"{node.name}: {line}" for line in node.load_report.problems()]
        for pg_id, segment in sorted(node.segments.items()):
            problems += [f"{node.name}: {line}" for line in segment.scrub()]
            if segment.suspect and not (segment.failed or segment.needs_repair):
                problems.append(f"{node.name}: PG {pg_id} has not caught up with its peers")
    vdl = volume.vdl
    for pg_id, pg in sorted(volume.pgs.items()):
        holders = [
            node.segments[pg_id]
            for node in volume.nodes.values()
            if not node.failed
            and node.holds(pg_id)
            and pg_id in node.segments
            and not node.segments[pg_id].failed
        ]
        problems += _lagging(volume, pg_id, pg.required_scl(vdl, vdl))
        pages = sorted({p for segment in holders for p in segment.page_nos()})
        for page_no in pages:
            images = {
                segment.read(page_no, vdl, volume.annulled)
                for segment in holders
                if segment.scl >= pg.required_scl(vdl, vdl)
            }
            if len(images) > 1:
                problems.append(f"page {page_no}: replicas differ at VDL {vdl}")
            if progress:
                progress(1)
    return problems


def _lagging(volume: Volume, pg_id: int, durable: int) -> list[str]:
    """Segments whose chain stops below what a write quorum holds of the PG: frames they
    lost (an older copy of a log, say) or never got, which their peers would send."""
    chains = [
        node.segments[pg_id]
        for node in volume.nodes.values()
        if not node.failed and node.holds(pg_id) and pg_id in node.segments
    ]
    problems = []
    for node in volume.nodes.values():
        segment = node.segments.get(pg_id) if node.holds(pg_id) else None
        if node.failed or segment is None or segment.failed or segment.scl >= durable:
            continue
        missing = max(
            (
                sum(segment.scl < last <= durable for last in peer.chain_last_lsns)
                for peer in chains
                if peer is not segment
            ),
            default=0,
        )
        problems.append(
            f"{node.name}: {log_name(pg_id)}: behind its peers: {missing} frames up to LSN "
            f"{durable} missing (SCL {segment.scl}; peers would send them)"
        )
    return problems


def _verify(arguments: argparse.Namespace) -> int:
    from tqdm import tqdm

    # The logs and checkpoints are left as they are: a tail to cut is reported, not
    # cut, and frames fetched from peers are not written. (Recovery still records
    # its epoch and truncation in each node.meta.)
    volume = Volume.open(arguments.path, readonly=True)
    try:
        total = (
            sum(len(s.page_nos()) for n in volume.nodes.values() for s in n.segments.values()) // 6
        )
        with tqdm(total=total, unit="page", desc="verify", disable=not sys.stderr.isatty()) as bar:
            problems = verify_volume(volume, bar.update)
    finally:
        volume.close()
    for line in problems:
        print(f"problem: {line}")
    print(f"verified {len(volume.pgs)} PGs: {len(problems)} problems")
    return 1 if problems else 0


# --- dump -----------------------------------------------------------------------------


def lsn_range(text: str) -> tuple[int, int]:
    """(first, last) of ``FIRST:LAST``, ``FIRST:``, ``:LAST`` or one LSN ``N`` (N:N)."""
    first_text, colon, last_text = text.strip().partition(":")
    try:
        first = int(first_text) if first_text.strip() else 0
        last = first  # one LSN
        if colon:
            last = int(last_text) if last_text.strip() else native.LSN_MAX
    except ValueError:
        raise InvalidArgumentError(
            f"cannot read LSN range {text!r}: use FIRST:LAST, FIRST:, :LAST or one LSN"
        ) from None
    if not 0 <= first <= last <= native.LSN_MAX:
        raise InvalidArgumentError(
            f"LSN range {text!r} is empty or out of range: LSNs go from 0 to "
            f"{native.LSN_MAX}, FIRST <= LAST"
        )
    return first, last


def _dump(arguments: argparse.Namespace) -> int:
    lo, hi = lsn_range(arguments.lsn) if arguments.lsn is not None else (0, native.LSN_MAX)
    if arguments.limit < 0:
        raise InvalidArgumentError(f"--limit {arguments.limit} must be 0 or more")
    volume = Volume.open(arguments.path, readonly=True)
    try:
        page = arguments.page
        if page is not None and not 0 <= page < volume.geometry.page_count:
            raise PageOutOfRangeError(page, volume.geometry.page_count)
        live = [n for n in volume.nodes.values() if not n.failed]
        if not live:
            raise QuorumError("no storage node of the volume can be read: every one is down")
        pg_ids = [volume.geometry.pg_of(page)] if page is not None else sorted(volume.pgs)
        kinds = {log.KIND_WRITE: "WRITE", log.KIND_PAGE: "PAGE", log.KIND_ZERO: "ZERO"}
        print("lsn\tpg\tpage\tkind\toffset\tlength\tflags\ttime")
        shown = 0
        for pg_id in pg_ids:
            # One live member's segment (the first that has it).
            segment = next(
                (n.segments[pg_id] for n in live if n.holds(pg_id) and pg_id in n.segments), None
            )
            if segment is None:
                continue
            for data in segment.chain_frames:
                frame = log.decode_frame(
                    data, volume.geometry.page_size, segment.page_lo, segment.page_hi
                )
                if frame.last_lsn < lo or frame.first_lsn > hi:
                    continue
                body = frame.body
                for position in native.index(body, volume.geometry.page_size).positions:
                    lsn, _, page_no, moment, offset, length, kind, flags = (
                        log.RECORD_HEADER.unpack_from(body, position)
                    )
                    if not lo <= lsn <= hi or (page is not None and page_no != page):
                        continue
                    if shown >= arguments.limit:
                        return 0
                    hidden = (
                        " hidden"
                        if any(
                            volume.annulled[i] < lsn <= volume.annulled[i + 1]
                            for i in range(0, len(volume.annulled), 2)
                        )
                        else ""
                    )
                    stamp = format_time(moment) if flags & log.FLAG_CPL else ""
                    print(
                        f"{lsn}\t{pg_id}\t{page_no}\t{kinds.get(kind, kind)}\t{offset}\t{length}\t{'CPL' if flags & log.FLAG_CPL else ''}{hidden}\t{stamp}"
                    )
                    shown += 1
    finally:
        volume.close()
    return 0


# --- backtrack and restore --------------------------------------------------------------


def _backtrack(arguments: argparse.Namespace) -> int:
    target = parse_target(arguments.to)  # a bad time fails before the volume is opened
    kind = recorded_clock(arguments.path)
    if kind != "wall" and not arguments.wall_clock:
        # Its times are not this machine's: "now" and "-2h" would name other moments,
        # and the commits after would mix two time lines.
        raise InvalidArgumentError(
            f"{arguments.path} was made on a {kind} clock, not the wall clock this command "
            "runs on; pass --wall-clock to act on it with the wall clock anyway"
        )
    volume = _open_rebuilding(arguments.path, arguments.rebuild_missing)
    try:
        result = volume.backtrack(target)
    finally:
        volume.close()
    print(
        f"backtracked to {format_time(result.target)}: last visible commit LSN {result.lsn} "
        f"at {format_time(result.commit_time) if result.commit_time else 'creation'} "
        f"(history version {result.history_version})"
    )
    return 0


def _open_rebuilding(path: str, rebuild_missing: bool) -> Volume:
    """Volume.open, with a progress bar of the pages segment repairs copy while it
    rebuilds missing node folders."""
    from tqdm import tqdm

    with tqdm(
        unit="page", desc="rebuild", disable=not rebuild_missing or not sys.stderr.isatty()
    ) as bar:
        return Volume.open(path, rebuild_missing=rebuild_missing, progress=bar.update)


def _restore(arguments: argparse.Namespace) -> int:
    from tqdm import tqdm

    target = parse_target(arguments.to)  # a bad time fails before the backup is read
    with tqdm(unit="object", desc="restore", disable=not sys.stderr.isatty()) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        started = time.perf_counter()
        source: Any = arguments.backup
        if arguments.storage_option:
            source = StoreLocation(arguments.backup, _storage_options(arguments.storage_option))
        volume = Volume.restore(
            source, to=target, path=arguments.into, progress=progress, nodes=arguments.nodes
        )
    elapsed = time.perf_counter() - started
    try:
        status = volume.status()
        moment, point = volume.restored_from or (float("nan"), volume.vdl)
    finally:
        volume.close()
    print(
        f"restored to {format_time(moment)} (LSN {point}) into {arguments.into}: "
        f"{status['pg_count']} PGs, VDL {status['vdl']}, {elapsed:.2f} s"
    )
    return 0


def _storage_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        if not equals or not key:
            raise InvalidArgumentError(f"--storage-option {pair!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return options


# --- bench ----------------------------------------------------------------------------


def _bench(arguments: argparse.Namespace) -> int:
    return report.run(
        Path(arguments.out),
        quick=arguments.quick,
        tiny=arguments.tiny,
        root=Path(arguments.source),
    )


# --- parser -----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    # --debug is taken before and after the command: each command's copy leaves
    # the value alone unless given (SUPPRESS), so either place works.
    common = _Parser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    parser = _Parser(
        prog="aurora-storage",
        description="A log-structured, quorum-replicated storage volume after Amazon Aurora.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"aurora-storage {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, parents=[common])

    demo = command("demo", "a tour of the whole volume (under a minute)")
    demo.add_argument(
        "--path", help="a new or empty folder for the demo's volumes (default: a temporary folder)"
    )
    demo.add_argument("--keep", action="store_true", help="keep the demo folder afterwards")
    demo.set_defaults(handler=demo_module.run)

    status = command("status", "nodes, AZs, health, PGs, LSNs, windows")
    status.add_argument("path")
    formats = status.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="machine-readable output")
    formats.add_argument(
        "--prometheus", action="store_true", help="Prometheus text format (prometheus_client)"
    )
    formats.add_argument("--openmetrics", action="store_true", help="OpenMetrics text format")
    status.set_defaults(handler=_status)

    verify = command("verify", "scrub every frame and page; exit 1 on any problem")
    verify.add_argument("path")
    verify.set_defaults(handler=_verify)

    dump = command("dump", "records of a page or an LSN range")
    dump.add_argument("path")
    dump.add_argument("--page", type=int, help="only records of this page")
    dump.add_argument("--lsn", help="LSN range FIRST:LAST (either end may be empty), or one LSN")
    dump.add_argument(
        "--limit", type=int, default=1000, help="at most this many records (default 1000)"
    )
    dump.set_defaults(handler=_dump)

    backtrack = command("backtrack", "rewind the volume in place to a time")
    backtrack.add_argument("path")
    backtrack.add_argument("--to", required=True, help=TIME_HELP)
    backtrack.add_argument(
        "--wall-clock",
        action="store_true",
        help="act on a volume made on a simulated clock with this machine's clock",
    )
    backtrack.add_argument(
        "--rebuild-missing",
        action="store_true",
        help="rebuild missing node folders from their peers (Volume.open rebuild_missing)",
    )
    backtrack.set_defaults(handler=_backtrack)

    restore = command("restore", "point-in-time restore into a new volume")
    restore.add_argument("backup", help="backup folder or URL")
    restore.add_argument("--to", required=True, help=TIME_HELP)
    restore.add_argument(
        "--into", required=True, help="folder of the new volume (removed again if it fails)"
    )
    restore.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an fsspec storage option of the backup URL (repeatable; VALUE read as JSON "
        "when it is JSON, else as text), e.g. endpoint_url=http://127.0.0.1:9000",
    )
    restore.add_argument(
        "--nodes",
        type=int,
        default=6,
        help="storage nodes of the new volume: a multiple of 3, at least 6 (default 6)",
    )
    restore.set_defaults(handler=_restore)

    bench = command("bench", "run the benchmarks and write a report folder")
    bench.add_argument(
        "--quick", action="store_true", help="leave out the workloads that build gigabytes of data"
    )
    bench.add_argument(
        "--tiny",
        action="store_true",
        help="every workload at a tiny size, a few rounds: checks the run, measures nothing",
    )
    bench.add_argument(
        "--out", default="bench-report", help="report folder (default: bench-report)"
    )
    bench.add_argument(
        "--source", default=".", help="checkout holding benchmarks/ (default: the current folder)"
    )
    bench.set_defaults(handler=_bench)
    return parser


def _join_time_values(argv: Sequence[str]) -> list[str]:
    """``--to -2h`` as ``--to=-2h``: argparse would take ``-2h`` for an option."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        if (
            word in _TIME_OPTIONS
            and index + 1 < len(argv)
            and _RELATIVE_VALUE.fullmatch(argv[index + 1])
        ):
            joined.append(f"{word}={argv[index + 1]}")
            index += 2
            continue
        joined.append(word)
        index += 1
    return joined


def _quiet_stdout() -> None:
    """The reader of stdout went away: later writes (the exit's flush too) go nowhere."""
    try:
        descriptor = os.open(os.devnull, os.O_WRONLY)
        os.dup2(descriptor, sys.stdout.fileno())
        os.close(descriptor)
    except (OSError, ValueError):  # stdout is no file (captured): nothing to redirect
        pass


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    arguments = build_parser().parse_args(_join_time_values(words))
    try:
        status: int = arguments.handler(arguments)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        if arguments.debug:
            raise
        print("aurora-storage: interrupted", file=sys.stderr)
        return 130
    except (AuroraStorageError, OSError) as error:
        if arguments.debug:
            raise
        print(f"aurora-storage: {error}", file=sys.stderr)
        return 1
    return status
