"""Throughput reporting shared by every benchmark file: rates, baselines, ratios, goals.

A benchmark times its workload with pytest-benchmark's ``benchmark`` fixture,
then hands the result to the ``throughput`` fixture under a workload name and
a role: ``"subject"`` for the code under test, ``"baseline-A"``,
``"baseline-B"``... for the baselines timed in the same run (docs: DESIGN.md
section 5). ``throughput`` writes records/s and payload bytes/s into
``benchmark.extra_info`` and keeps the measurement in a session registry; at
the end of the session ``pytest_terminal_summary`` prints one row per subject
and baseline of a workload with their ratio and the goal, and writes the same
table to ``.benchmarks/ratios.json`` for report tools.

Rates come from the median round time (the machine is shared and noisy), per
record, so a baseline timed on fewer records than its subject still compares
fairly. A missed goal is reported, never failed: timings do not decide tests.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

SUBJECT = "subject"
RATIOS_FILE = Path(".benchmarks") / "ratios.json"


@dataclass(frozen=True)
class Measurement:
    """One timed workload: what one round did and its median duration."""

    workload: str
    role: str
    label: str
    median_s: float  # median of one round, as pytest-benchmark measured it
    records: int  # records one round handles
    payload_bytes: int  # payload bytes one round handles
    ratio_goals: dict[str, float] = field(default_factory=dict)  # baseline role -> ratio_min
    median_us_max: float | None = None  # goal on the median round, in microseconds

    @property
    def records_per_s(self) -> float:
        return self.records / self.median_s

    @property
    def bytes_per_s(self) -> float:
        return self.payload_bytes / self.median_s

    @property
    def seconds_per_record(self) -> float:
        return self.median_s / self.records


class RatioRegistry:
    """Measurements of this session, keyed by (workload, role); the last one wins."""

    def __init__(self) -> None:
        self.measurements: dict[tuple[str, str], Measurement] = {}

    def add(self, measurement: Measurement) -> None:
        self.measurements[(measurement.workload, measurement.role)] = measurement

    def rows(self) -> list[dict[str, Any]]:
        """One row per (subject, baseline) pair and per median goal, workloads in run order."""
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
            if subject.median_us_max is not None or not baselines:
                rows.append(_row(workload, subject, None))
        return rows


def _row(
    workload: str,
    subject: Measurement | None,
    baseline: Measurement | None,
    missing_role: str | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "workload": workload,
        "subject": subject.label if subject else None,
        "subject_records_per_s": subject.records_per_s if subject else None,
        "subject_bytes_per_s": subject.bytes_per_s if subject else None,
        "subject_median_us": subject.median_s * 1e6 if subject else None,
        "baseline": baseline.role if baseline else missing_role,
        "baseline_label": baseline.label if baseline else None,
        "baseline_records_per_s": baseline.records_per_s if baseline else None,
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
    elif subject is not None and subject.median_us_max is not None:
        row["goal"] = {"kind": "median_us_max", "value": subject.median_us_max}
        row["met"] = subject.median_s * 1e6 < subject.median_us_max
    return row


_REGISTRY = pytest.StashKey[RatioRegistry]()


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
    ) -> Measurement | None:
        """Call after ``benchmark(...)``; ``records`` and ``payload_bytes`` are per round.

        Returns None when pytest-benchmark took no timings (``--benchmark-disable``).
        """
        assert records > 0, "a workload handles at least one record a round"
        self.benchmark.group = workload
        metadata = self.benchmark.stats
        if metadata is None or not metadata.stats.data:
            return None
        measurement = Measurement(
            workload=workload,
            role=role,
            label=label or role,
            median_s=float(metadata.stats.median),
            records=records,
            payload_bytes=payload_bytes,
            ratio_goals=dict(ratio_goals or {}),
            median_us_max=median_us_max,
        )
        self.registry.add(measurement)
        self.benchmark.extra_info.update(
            workload=workload,
            role=role,
            label=measurement.label,
            records_per_round=records,
            payload_bytes_per_round=payload_bytes,
            records_per_s=measurement.records_per_s,
            bytes_per_s=measurement.bytes_per_s,
            median_s=measurement.median_s,
        )
        return measurement


@pytest.fixture
def throughput(benchmark: Any, ratio_registry: RatioRegistry) -> Throughput:
    return Throughput(benchmark, ratio_registry)


# --- the summary --------------------------------------------------------------------


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.1f} {unit}"


def _goal_text(row: dict[str, Any]) -> str:
    goal = row["goal"]
    if goal is None:
        return "-"
    if goal["kind"] == "ratio_min":
        return f">= {goal['value']:g}x"
    return f"median < {goal['value']:g} us"


def _result_text(row: dict[str, Any]) -> str:
    goal = row["goal"]
    if goal is None:
        return ""
    if row["met"] is None:
        return "not measured"
    verdict = "met" if row["met"] else "MISSED"
    if goal["kind"] == "median_us_max":
        return f"{verdict} ({row['subject_median_us']:.2f} us)"
    return verdict


def _table(rows: list[dict[str, Any]]) -> list[str]:
    header = (
        "workload",
        "records/s",
        "payload B/s",
        "baseline",
        "baseline records/s",
        "ratio",
        "goal",
        "result",
    )
    cells = [header]
    for row in rows:
        cells.append(
            (
                row["workload"],
                _si(row["subject_records_per_s"], "rec/s"),
                _si(row["subject_bytes_per_s"], "B/s"),
                row["baseline"] or "-",
                _si(row["baseline_records_per_s"], "rec/s"),
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
    target = config.rootpath / RATIOS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "statistic": "median",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
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
    temporary = target.with_suffix(".json.tmp")
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
