"""The ``aurora-storage`` command line: demo, status, verify, dump, backtrack, restore, bench.

Each command is one function taking parsed arguments and returning an exit
status. Library errors print one line and exit 1; ``--debug`` shows the
traceback instead. Times accept ISO-8601 (``2026-11-27T10:00:00``, UTC when
no zone is given), relative forms (``-2h``, ``-30m``, ``-1d``, ``-45s``),
``now``, or Unix seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import demo as demo_module
from . import log, native, report
from .errors import AuroraStorageError, InvalidArgumentError
from .node import log_name
from .volume import Volume

_RELATIVE = re.compile(r"^([+-])(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds from ISO-8601, a relative form (``-2h``), ``now`` or a number."""
    now = time.time() if now is None else now
    value = text.strip()
    if value == "now":
        return now
    match = _RELATIVE.match(value)
    if match:
        sign = -1.0 if match.group(1) == "-" else 1.0
        return now + sign * float(match.group(2)) * _UNITS[match.group(3)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgumentError(
            f"cannot read time {text!r}: use ISO-8601, -2h / -30m / -1d, now, or Unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")


# --- status ---------------------------------------------------------------------------


def prometheus(status: dict[str, Any]) -> str:
    """Prometheus text exposition of a volume's status; names follow Aurora's CloudWatch."""
    lines: list[str] = []

    def metric(name: str, help_text: str, value: float, labels: str = "") -> None:
        if not any(line.startswith(f"# HELP {name} ") for line in lines):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
        lines.append(f"{name}{labels} {value}")

    metric(
        "aurora_volume_bytes_used",
        "Bytes stored by the volume (VolumeBytesUsed).",
        status["bytes_used"],
    )
    metric("aurora_vdl", "Volume durable LSN.", status["vdl"])
    metric("aurora_vcl", "Volume complete LSN.", status["vcl"])
    metric("aurora_pg_count", "Protection groups written.", status["pg_count"])
    metric("aurora_epoch", "Volume epoch.", status["epoch"])
    for node in status["nodes"]:
        labels = f'{{node="{node["name"]}",az="{node["az"]}"}}'
        metric("aurora_node_up", "1 while the storage node answers.", int(node["up"]), labels)
        metric(
            "aurora_node_bytes",
            "Bytes a node stores.",
            node["disk_bytes"] or node["memory_bytes"],
            labels,
        )
    for pg in status["pgs"]:
        for node, scl in pg["scls"].items():
            metric(
                "aurora_segment_scl",
                "Segment complete LSN.",
                scl,
                f'{{pg="{pg["pg"]}",node="{node}"}}',
            )
    backtrack = status.get("backtrack")
    if backtrack:
        metric(
            "aurora_backtrack_window_target_seconds",
            "Backtrack window asked for (BacktrackWindowTarget).",
            backtrack["window_target_seconds"],
        )
        metric(
            "aurora_backtrack_window_actual_seconds",
            "Backtrack window reachable now (BacktrackWindowActual).",
            backtrack["window_actual_seconds"],
        )
        metric(
            "aurora_backtrack_change_records_stored",
            "Commits kept for backtrack (BacktrackChangeRecordsStored).",
            backtrack["change_records_stored"],
        )
    backup = status.get("backup")
    if backup and backup["earliest_restorable"] is not None:
        metric(
            "aurora_backup_earliest_restorable_time",
            "Earliest restorable time.",
            backup["earliest_restorable"],
        )
        metric(
            "aurora_backup_latest_restorable_time",
            "Latest restorable time.",
            backup["latest_restorable"],
        )
    return "\n".join(lines) + "\n"


def _status(arguments: argparse.Namespace) -> int:
    volume = Volume.open(arguments.path, readonly=True)
    try:
        status = volume.status()
    finally:
        volume.close()
    if arguments.prometheus:
        sys.stdout.write(prometheus(status))
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
            f"  {node['name']:6} {node['az']}  {health:8} {node['segments']} segments, {node['disk_bytes'] or node['memory_bytes']:,} B"
        )
        for line in node["problems"]:
            if line != node["failed"]:
                print(f"         {line}")
    for pg in status["pgs"]:
        scls = " ".join(f"{node}={scl}" for node, scl in pg["scls"].items())
        print(f"  PG {pg['pg']}: PGCL {pg['pgcl']}  SCL {scls}")
    backtrack = status.get("backtrack")
    if backtrack:
        print(
            f"  backtrack window: target {backtrack['window_target_seconds'] / 3600:.1f} h, actual "
            f"{backtrack['window_actual_seconds'] / 3600:.2f} h ({_iso(backtrack['earliest'])} .. "
            f"{_iso(backtrack['latest'])})"
        )
    else:
        print("  backtrack: off")
    backup = status.get("backup")
    if backup and backup["earliest_restorable"] is None:
        print(f"  restorable: nothing yet (retention {backup['retention_days']} days)")
    elif backup:
        print(
            f"  restorable: {_iso(backup['earliest_restorable'])} .. {_iso(backup['latest_restorable'])}"
            f" (retention {backup['retention_days']} days)"
        )
    else:
        print("  backup: off")
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
            if not node.failed and pg_id in node.segments and not node.segments[pg_id].failed
        ]
        problems += _lagging(volume, pg_id, pg.required_scl(vdl, vdl))
        pages = sorted({p for segment in holders for p in segment.page_log.page_nos()})
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
        if not node.failed and pg_id in node.segments
    ]
    problems = []
    for node in volume.nodes.values():
        segment = node.segments.get(pg_id)
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
        total = sum(
            len(s.page_log.page_nos()) for s in next(iter(volume.nodes.values())).segments.values()
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


def _dump(arguments: argparse.Namespace) -> int:
    volume = Volume.open(arguments.path, readonly=True)
    try:
        lo, hi = 0, native.LSN_MAX
        if arguments.lsn:
            first, _, last = arguments.lsn.partition(":")
            lo, hi = int(first or 0), int(last) if last else native.LSN_MAX
        page = arguments.page
        node = next(n for n in volume.nodes.values() if not n.failed)
        pg_ids = [volume.geometry.pg_of(page)] if page is not None else sorted(node.segments)
        kinds = {log.KIND_WRITE: "WRITE", log.KIND_PAGE: "PAGE", log.KIND_ZERO: "ZERO"}
        print("lsn\tpg\tpage\tkind\toffset\tlength\tflags\ttime")
        shown = 0
        for pg_id in pg_ids:
            segment = node.segments.get(pg_id)
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
                    hidden = (
                        " hidden"
                        if any(
                            volume.annulled[i] < lsn <= volume.annulled[i + 1]
                            for i in range(0, len(volume.annulled), 2)
                        )
                        else ""
                    )
                    stamp = _iso(moment) if flags & log.FLAG_CPL else ""
                    print(
                        f"{lsn}\t{pg_id}\t{page_no}\t{kinds.get(kind, kind)}\t{offset}\t{length}\t{'CPL' if flags & log.FLAG_CPL else ''}{hidden}\t{stamp}"
                    )
                    shown += 1
                    if shown >= arguments.limit:
                        return 0
    finally:
        volume.close()
    return 0


# --- backtrack and restore --------------------------------------------------------------


def _backtrack(arguments: argparse.Namespace) -> int:
    volume = Volume.open(arguments.path)
    try:
        target = parse_time(arguments.to, time.time())
        result = volume.backtrack(target)
    finally:
        volume.close()
    print(
        f"backtracked to {_iso(target)}: last visible commit LSN {result.lsn} "
        f"at {_iso(result.commit_time) if result.commit_time else 'creation'} "
        f"(history version {result.history_version})"
    )
    return 0


def _restore(arguments: argparse.Namespace) -> int:
    from tqdm import tqdm

    target = parse_time(arguments.to, time.time())
    with tqdm(unit="object", desc="restore", disable=not sys.stderr.isatty()) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        started = time.perf_counter()
        volume = Volume.restore(arguments.backup, to=target, path=arguments.into, progress=progress)
    elapsed = time.perf_counter() - started
    assert volume.restored_from is not None
    status = volume.status()
    volume.close()
    print(
        f"restored to {_iso(target)} (LSN {volume.restored_from[1]}) into {arguments.into}: "
        f"{status['pg_count']} PGs, VDL {status['vdl']}, {elapsed:.2f} s"
    )
    return 0


# --- bench ----------------------------------------------------------------------------


def _bench(arguments: argparse.Namespace) -> int:
    return report.run(Path(arguments.out), quick=arguments.quick, root=Path(arguments.source))


# --- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aurora-storage",
        description="A log-structured, quorum-replicated storage volume after Amazon Aurora.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="a tour of the whole volume (under a minute)")
    demo.add_argument("--path", help="folder for the demo volume (default: a temporary folder)")
    demo.add_argument("--keep", action="store_true", help="keep the demo folder afterwards")
    demo.set_defaults(handler=demo_module.run)

    status = commands.add_parser("status", help="nodes, AZs, health, PGs, LSNs, windows")
    status.add_argument("path")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--prometheus", action="store_true", help="Prometheus text format")
    status.set_defaults(handler=_status)

    verify = commands.add_parser("verify", help="scrub every frame and page; exit 1 on any problem")
    verify.add_argument("path")
    verify.set_defaults(handler=_verify)

    dump = commands.add_parser("dump", help="records of a page or an LSN range")
    dump.add_argument("path")
    dump.add_argument("--page", type=int, help="only records of this page")
    dump.add_argument("--lsn", help="LSN range FIRST:LAST (either end may be empty)")
    dump.add_argument("--limit", type=int, default=1000, help="at most this many records")
    dump.set_defaults(handler=_dump)

    backtrack = commands.add_parser("backtrack", help="rewind the volume in place to a time")
    backtrack.add_argument("path")
    backtrack.add_argument(
        "--to", required=True, help="ISO-8601, now, Unix seconds, or relative as --to=-2h"
    )
    backtrack.set_defaults(handler=_backtrack)

    restore = commands.add_parser("restore", help="point-in-time restore into a new volume")
    restore.add_argument("backup", help="backup folder or URL")
    restore.add_argument(
        "--to", required=True, help="ISO-8601, now, Unix seconds, or relative as --to=-2h"
    )
    restore.add_argument("--into", required=True, help="folder of the new volume")
    restore.set_defaults(handler=_restore)

    bench = commands.add_parser("bench", help="run the benchmarks and write a report folder")
    bench.add_argument(
        "--quick", action="store_true", help="leave out the workloads that build gigabytes of data"
    )
    bench.add_argument(
        "--out", default="bench-report", help="report folder (default: bench-report)"
    )
    bench.add_argument(
        "--source", default=".", help="checkout holding benchmarks/ (default: the current folder)"
    )
    bench.set_defaults(handler=_bench)
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
    except OSError as error:
        if arguments.debug:
            raise
        print(f"aurora-storage: {error}", file=sys.stderr)
        return 1
    return status
