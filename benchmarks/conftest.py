"""Throughput reporting shared by every benchmark file: rates, baselines, ratios, goals.

A benchmark times its workload with pytest-benchmark's ``benchmark`` fixture,
then hands the result to the ``throughput`` fixture under a workload name and
a role: ``"subject"`` for the code under test, ``"baseline-A"``,
``"baseline-B"``... for the baselines timed in the same run (README.md,
"Benchmarks"). ``throughput`` writes the rate (records/s, or the workload's own
unit: rows, commits, reads...) and payload bytes/s into
``benchmark.extra_info`` and keeps the measurement in a session registry; at
the end of the session ``pytest_terminal_summary`` prints one row per subject
and baseline of a workload with their ratio and the goal, and writes the same
table as JSON for report tools: to ``--ratios-json PATH`` (``aurora-storage
bench`` passes its report folder), by default ``.benchmarks/ratios.json``
under the rootdir.

Sizes: ``AURORA_STORAGE_BENCH_TINY=1`` makes every workload tiny (a few
rounds of a few records; :func:`sized`): it checks that the suite runs and
that every workload's result is right, in seconds, and measures nothing
worth reading. ``aurora-storage bench --tiny`` sets it; a test runs the
command that way.

Two ways to time baselines:

- one test per role, each calling ``benchmark`` and ``throughput.report``
  (bench_apply.py): simple, but subject and baseline run seconds apart;
- :func:`interleave`: one test times the subject with pytest-benchmark and
  runs one round of every baseline just before each subject round, timing it
  here (``throughput.record``). The machine is shared and noisy, and fsync
  latency drifts by several times within a minute; interleaved rounds see the
  same drift, so their medians compare.

Goals: a minimum ratio to a baseline (``ratio_goals``), a maximum median
round (``median_us_max``), a minimum payload rate (``bytes_per_s_min``).
Rates come from the median round time, per record, so a baseline timed on
fewer records than its subject still compares fairly. A missed goal is
reported, never failed: timings do not decide tests.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

SUBJECT = "subject"
RATIOS_FILE = Path(".benchmarks") / "ratios.json"
UNIT_DEFAULT = "rec"
TINY = os.environ.get("AURORA_STORAGE_BENCH_TINY") == "1"


def sized(full: int, tiny: int) -> int:
    """A workload's size: ``full``, or ``tiny`` under AURORA_STORAGE_BENCH_TINY=1."""
    return tiny if TINY else full


@dataclass(frozen=True)
class Measurement:
    """One timed workload: what one round did and its median duration."""

    workload: str
    role: str
    label: str
    median_s: float  # median of one round, as pytest-benchmark (or interleave) measured it
    records: int  # records one round handles
    payload_bytes: int  # payload bytes one round handles
    ratio_goals: dict[str, float] = field(default_factory=dict)  # baseline role -> ratio_min
    median_us_max: float | None = None  # goal on the median round, in microseconds
    unit: str = UNIT_DEFAULT  # what a record is: "rows", "commits", "reads"...
    bytes_per_s_min: float | None = None  # goal on the payload rate
    rounds: int = 0  # rounds behind the median

    @property
    def records_per_s(self) -> float:
        return self.records / self.median_s

    @property
    def bytes_per_s(self) -> float:
        return self.payload_bytes / self.median_s

    @property
    def seconds_per_record(self) -> float:
        return self.median_s / self.records

    def absolute_goals(self) -> list[tuple[str, float]]:
        """Goals on the subject alone, as (kind, value)."""
        goals = []
        if self.median_us_max is not None:
            goals.append(("median_us_max", self.median_us_max))
        if self.bytes_per_s_min is not None:
            goals.append(("bytes_per_s_min", self.bytes_per_s_min))
        return goals


class RatioRegistry:
    """Measurements of this session, keyed by (workload, role); the last one wins."""

    def __init__(self) -> None:
        self.measurements: dict[tuple[str, str], Measurement] = {}

    def add(self, measurement: Measurement) -> None:
        self.measurements[(measurement.workload, measurement.role)] = measurement

    def rows(self) -> list[dict[str, Any]]:
        """One row per (subject, baseline) pair and per absolute goal, workloads in run order."""
        workloads = list(dict.fromkeys(workload for workload, _ in self.measurements))
        rows: list[dict[str, Any]] = []
        for workload in workloads:
            roles = {role: m for (name, role), m in self.measurements.items() if name == workload}
            subject = roles.get(SUBJECT)
            baselines = sorted(role for role in roles if role != SUBJECT)
            if subject is None:
                rows.extend(_row(workload, None, roles[role]) for role in baselines)
                continue
            rows.extend(_row(workload, subject, roles[role]) for role in baselines)
            for role in sorted(set(subject.ratio_goals) - set(baselines)):
                rows.append(_row(workload, subject, None, missing_role=role))
            absolute = subject.absolute_goals()
            rows.extend(_row(workload, subject, None, absolute=goal) for goal in absolute)
            if not baselines and not absolute:
                rows.append(_row(workload, subject, None))
        return rows


def _row(
    workload: str,
    subject: Measurement | None,
    baseline: Measurement | None,
    missing_role: str | None = None,
    absolute: tuple[str, float] | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "workload": workload,
        "subject": subject.label if subject else None,
        "subject_unit": subject.unit if subject else None,
        "subject_records_per_s": subject.records_per_s if subject else None,
        "subject_bytes_per_s": subject.bytes_per_s if subject else None,
        "subject_median_us": subject.median_s * 1e6 if subject else None,
        "subject_median_us_per_record": subject.seconds_per_record * 1e6 if subject else None,
        "baseline": baseline.role if baseline else missing_role,
        "baseline_label": baseline.label if baseline else None,
        "baseline_unit": baseline.unit if baseline else None,
        "baseline_records_per_s": baseline.records_per_s if baseline else None,
        "baseline_bytes_per_s": baseline.bytes_per_s if baseline else None,
        "baseline_median_us_per_record": baseline.seconds_per_record * 1e6 if baseline else None,
        "ratio": None,
        "goal": None,
        "met": None,
    }
    if subject is not None and baseline is not None:
        ratio = baseline.seconds_per_record / subject.seconds_per_record
        row["ratio"] = ratio
        goal = subject.ratio_goals.get(baseline.role)
        if goal is not None:
            row["goal"] = {"kind": "ratio_min", "value": goal}
            row["met"] = ratio >= goal
    elif subject is not None and missing_role is not None:
        row["goal"] = {"kind": "ratio_min", "value": subject.ratio_goals[missing_role]}
    elif subject is not None and absolute is not None:
        kind, value = absolute
        row["goal"] = {"kind": kind, "value": value}
        if kind == "median_us_max":
            row["met"] = subject.median_s * 1e6 < value
        else:
            row["met"] = subject.bytes_per_s >= value
    return row


_REGISTRY = pytest.StashKey[RatioRegistry]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--ratios-json",
        default=None,
        help="where to write the ratio table (default: .benchmarks/ratios.json under the rootdir)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_REGISTRY] = RatioRegistry()


@pytest.fixture(scope="session")
def ratio_registry(pytestconfig: pytest.Config) -> RatioRegistry:
    return pytestconfig.stash[_REGISTRY]


class Throughput:
    """Reports the benchmark just run: rates into extra_info, measurement into the registry."""

    def __init__(self, benchmark: Any, registry: RatioRegistry) -> None:
        self.benchmark = benchmark
        self.registry = registry

    def report(
        self,
        workload: str,
        role: str,
        *,
        records: int,
        payload_bytes: int,
        label: str = "",
        ratio_goals: dict[str, float] | None = None,
        median_us_max: float | None = None,
        unit: str = UNIT_DEFAULT,
        bytes_per_s_min: float | None = None,
    ) -> Measurement | None:
        """Call after ``benchmark(...)``; ``records`` and ``payload_bytes`` are per round.

        Returns None when pytest-benchmark took no timings (``--benchmark-disable``).
        """
        self.benchmark.group = workload
        metadata = self.benchmark.stats
        if metadata is None or not metadata.stats.data:
            return None
        measurement = self._add(
            workload,
            role,
            float(metadata.stats.median),
            len(metadata.stats.data),
            records=records,
            payload_bytes=payload_bytes,
            label=label,
            ratio_goals=ratio_goals,
            median_us_max=median_us_max,
            unit=unit,
            bytes_per_s_min=bytes_per_s_min,
        )
        self.benchmark.extra_info.update(_extra_info(measurement))
        return measurement

    def record(
        self,
        workload: str,
        role: str,
        *,
        seconds: Sequence[float],
        records: int,
        payload_bytes: int,
        label: str = "",
        ratio_goals: dict[str, float] | None = None,
        median_us_max: float | None = None,
        unit: str = UNIT_DEFAULT,
        bytes_per_s_min: float | None = None,
    ) -> Measurement | None:
        """Registers rounds timed here (``seconds``, one per round), e.g. by :func:`interleave`.

        The rates go into ``extra_info["measured_here"]`` under ``workload/role``,
        beside what ``report`` put there. Returns None when benchmarks are disabled.
        """
        if getattr(self.benchmark, "disabled", False) or not seconds:
            return None
        measurement = self._add(
            workload,
            role,
            statistics.median(seconds),
            len(seconds),
            records=records,
            payload_bytes=payload_bytes,
            label=label,
            ratio_goals=ratio_goals,
            median_us_max=median_us_max,
            unit=unit,
            bytes_per_s_min=bytes_per_s_min,
        )
        measured = self.benchmark.extra_info.setdefault("measured_here", {})
        measured[f"{workload}/{role}"] = _extra_info(measurement)
        return measurement

    def _add(
        self,
        workload: str,
        role: str,
        median_s: float,
        rounds: int,
        *,
        records: int,
        payload_bytes: int,
        label: str,
        ratio_goals: dict[str, float] | None,
        median_us_max: float | None,
        unit: str,
        bytes_per_s_min: float | None,
    ) -> Measurement:
        assert records > 0, "a workload handles at least one record a round"
        measurement = Measurement(
            workload=workload,
            role=role,
            label=label or role,
            median_s=median_s,
            records=records,
            payload_bytes=payload_bytes,
            ratio_goals=dict(ratio_goals or {}),
            median_us_max=median_us_max,
            unit=unit,
            bytes_per_s_min=bytes_per_s_min,
            rounds=rounds,
        )
        self.registry.add(measurement)
        return measurement


def _extra_info(measurement: Measurement) -> dict[str, Any]:
    return {
        "workload": measurement.workload,
        "role": measurement.role,
        "label": measurement.label,
        "unit": measurement.unit,
        "records_per_round": measurement.records,
        "payload_bytes_per_round": measurement.payload_bytes,
        "records_per_s": measurement.records_per_s,
        f"{measurement.unit}_per_s": measurement.records_per_s,
        "bytes_per_s": measurement.bytes_per_s,
        "median_s": measurement.median_s,
        "median_us_per_record": measurement.seconds_per_record * 1e6,
        "rounds": measurement.rounds,
    }


@pytest.fixture
def throughput(benchmark: Any, ratio_registry: RatioRegistry) -> Throughput:
    return Throughput(benchmark, ratio_registry)


# --- interleaved rounds -------------------------------------------------------------


def timed(function: Callable[..., object], *arguments: object) -> float:
    """Seconds one call of ``function(*arguments)`` takes."""
    started = time.perf_counter()
    function(*arguments)
    return time.perf_counter() - started


def interleave(
    benchmark: Any,
    subject: Callable[[int], object],
    baselines: Mapping[str, Callable[[int], float]],
    *,
    rounds: int,
    warmup_rounds: int = 1,
    prepare: Callable[[int], object] | None = None,
    teardown: Callable[[int], object] | None = None,
) -> dict[str, list[float]]:
    """Times ``subject`` with pytest-benchmark, one round of each baseline before each round.

    Every callable takes the round number (0-based, warmup rounds included), so
    a round can use keys no earlier round used. A baseline times itself and
    returns its seconds, leaving its own preparation untimed (wrap a plain
    function with :func:`timed`). ``prepare`` runs after the baselines and
    ``teardown`` after the subject's round, both untimed. Returns each
    baseline's round durations, warmup rounds left out.
    """
    durations: dict[str, list[float]] = {role: [] for role in baselines}
    numbers = itertools.count()

    def setup() -> tuple[tuple[int], dict[str, Any]]:
        number = next(numbers)
        for role, baseline in baselines.items():
            seconds = baseline(number)
            if number >= warmup_rounds:
                durations[role].append(seconds)
        if prepare is not None:
            prepare(number)
        return (number,), {}

    def after(number: int) -> None:
        if teardown is not None:
            teardown(number)

    benchmark.pedantic(
        subject,
        setup=setup,
        teardown=after,
        rounds=rounds,
        warmup_rounds=warmup_rounds,
        iterations=1,
    )
    return durations


# --- the summary --------------------------------------------------------------------


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.1f} {unit}"


def _rate(value: float | None, unit: str | None) -> str:
    """``12.34 k rows/s``: the unit is a word, so the prefix stands apart."""
    if value is None or unit is None:
        return "-"
    if unit == UNIT_DEFAULT:
        return _si(value, "rec/s")
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix} {unit}/s"
    return f"{value:.1f} {unit}/s"


def _duration(microseconds: float | None) -> str:
    if microseconds is None:
        return "-"
    if microseconds >= 1e6:
        return f"{microseconds / 1e6:.2f} s"
    if microseconds >= 1e3:
        return f"{microseconds / 1e3:.2f} ms"
    if microseconds >= 1:
        return f"{microseconds:.2f} us"
    return f"{microseconds * 1e3:.1f} ns"


def _goal_text(row: dict[str, Any]) -> str:
    goal = row["goal"]
    if goal is None:
        return "-"
    if goal["kind"] == "ratio_min":
        return f">= {goal['value']:.3g}x"
    if goal["kind"] == "bytes_per_s_min":
        return f">= {_si(goal['value'], 'B/s')}"
    return f"median < {_duration(goal['value'])}"


def _result_text(row: dict[str, Any]) -> str:
    goal = row["goal"]
    if goal is None:
        return ""
    if row["met"] is None:
        return "not measured"
    verdict = "met" if row["met"] else "MISSED"
    if goal["kind"] == "median_us_max":
        return f"{verdict} ({_duration(row['subject_median_us'])})"
    if goal["kind"] == "bytes_per_s_min":
        return f"{verdict} ({_si(row['subject_bytes_per_s'], 'B/s')})"
    return verdict


def _table(rows: list[dict[str, Any]]) -> list[str]:
    header = (
        "workload",
        "rate",
        "payload B/s",
        "median/rec",
        "baseline",
        "baseline rate",
        "ratio",
        "goal",
        "result",
    )
    cells = [header]
    for row in rows:
        baseline = row["baseline_label"] or row["baseline"] or "-"
        cells.append(
            (
                row["workload"],
                _rate(row["subject_records_per_s"], row["subject_unit"]),
                _si(row["subject_bytes_per_s"] or None, "B/s"),
                _duration(row["subject_median_us_per_record"]),
                baseline,
                _rate(row["baseline_records_per_s"], row["baseline_unit"]),
                "-" if row["ratio"] is None else f"{row['ratio']:.2f}x",
                _goal_text(row),
                _result_text(row),
            )
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return [line.rstrip() for line in lines]


def _write_json(config: pytest.Config, registry: RatioRegistry, rows: list[dict[str, Any]]) -> Path:
    chosen = config.getoption("--ratios-json")
    target = Path(chosen) if chosen else config.rootpath / RATIOS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "statistic": "median",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "tiny": TINY,  # every workload at a tiny size: the figures measure nothing
        "rows": rows,
        "measurements": [
            {
                **asdict(m),
                "records_per_s": m.records_per_s,
                "bytes_per_s": m.bytes_per_s,
            }
            for m in registry.measurements.values()
        ],
    }
    # A name of its own: two sessions (another benchmark file, run meanwhile) may write at once.
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    temporary.replace(target)
    return target


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    registry = config.stash.get(_REGISTRY, None)
    if registry is None or not registry.measurements:
        return
    rows = registry.rows()
    terminalreporter.write_sep("=", "throughput and ratios to baselines (medians, same run)")
    for line in _table(rows):
        terminalreporter.write_line(line)
    target = _write_json(config, registry, rows)
    terminalreporter.write_line(f"ratios written to {target}")
