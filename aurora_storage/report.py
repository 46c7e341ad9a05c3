"""``aurora-storage bench``: run the benchmark suite and write a report folder.

The suite (``benchmarks/`` of a checkout, run with pytest-benchmark) runs
against the installed package: pytest starts in an empty scratch folder,
never in the checkout, whose uncompiled ``aurora_storage/`` would otherwise
come first on ``sys.path``. Everything lands in the report folder:
``ratios.json`` (the suite's same-run ratio table, benchmarks/conftest.py),
``pytest-benchmark.json`` (pytest-benchmark's own ``--benchmark-json``, for
its compare tools), ``report.md`` (one row per workload and baseline, with
the goal and whether it was met) and, when matplotlib is installed (the
``report`` extra), two charts: throughput per workload and ratio to baseline
against the goal. ``tiny`` (``AURORA_STORAGE_BENCH_TINY=1``) runs every
workload at a tiny size with the fewest rounds pytest-benchmark allows: a
check that the suite runs, not a measurement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

RATIOS_NAME = "ratios.json"
PYTEST_BENCHMARK_NAME = "pytest-benchmark.json"
TINY_ENVIRONMENT = "AURORA_STORAGE_BENCH_TINY"
SCALE_ENVIRONMENT = "AURORA_STORAGE_BENCH_SCALE_MB"
QUICK_SCALE_MB = 64  # bench_scale's volume under --quick: 384 MiB on disk with its copies
QUICK_SKIPS = "not large_working_set and not restore_throughput and not node_restart_replay"
# pytest-benchmark's own calibration, cut to one round of one call under --tiny.
TINY_OPTIONS = (
    "--benchmark-min-rounds=1",
    "--benchmark-max-time=0",
    "--benchmark-min-time=0",
    "--benchmark-warmup=off",
)


def run(out: Path, *, quick: bool, root: Path, tiny: bool = False) -> int:
    """Runs the suite from the checkout at ``root`` and writes the report into ``out``."""
    source = root.resolve()
    benchmarks = sorted((source / "benchmarks").glob("bench_*.py"))
    if not benchmarks:
        raise ConfigurationError(
            f"no benchmarks/bench_*.py under {source}: run from a checkout, or pass --source"
        )
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    ratios = out / RATIOS_NAME
    for stale in (ratios, out / PYTEST_BENCHMARK_NAME):
        stale.unlink(missing_ok=True)  # a failed run must not report the last one's figures
    environment = dict(os.environ)
    command = [
        sys.executable,
        "-m",
        "pytest",
        *map(str, benchmarks),
        "--benchmark-only",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--rootdir={source}",
        f"--ratios-json={ratios}",
        f"--benchmark-json={out / PYTEST_BENCHMARK_NAME}",
    ]
    if quick:  # the workloads that build gigabytes of data are left out
        command += ["-k", QUICK_SKIPS]
        # bench_scale's volumes (six copies each) at a size that builds no gigabytes,
        # unless one is asked for.
        environment.setdefault(SCALE_ENVIRONMENT, str(QUICK_SCALE_MB))
    if tiny:
        environment[TINY_ENVIRONMENT] = "1"
        command += TINY_OPTIONS
    print("running:", " ".join(command), flush=True)
    with tempfile.TemporaryDirectory(prefix="aurora-bench-") as scratch:
        finished = subprocess.run(command, cwd=scratch, env=environment, check=False)
    if not ratios.exists():
        raise ConfigurationError(
            f"the benchmark run wrote no {ratios} (pytest exited {finished.returncode}: "
            "see its output above)"
        )
    document = json.loads(ratios.read_text())
    markdown = render_markdown(document)
    (out / "report.md").write_text(markdown)
    charts = write_charts(document, out)
    print(markdown)
    print(f"report: {out / 'report.md'}" + (f", charts: {', '.join(charts)}" if charts else ""))
    return int(finished.returncode)


def _rate(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.2f} {prefix}{unit}/s"
    return f"{value:.1f} {unit}/s"


def _goal(goal: dict[str, Any] | None) -> str:
    if not goal:
        return "-"
    kind, value = goal.get("kind", ""), goal.get("value")
    if not isinstance(value, (int, float)):
        return f"{kind} {value}"
    if kind == "ratio_min":
        return f">= {value:.2f}x"
    if kind == "median_us_max":
        return f"< {value / 1e6:g} s median" if value >= 1e6 else f"< {value:g} us median"
    if kind == "bytes_per_s_min":
        return f">= {_rate(value, 'B')}"
    return f"{kind} {value}"


def render_markdown(document: dict[str, Any]) -> str:
    lines = [
        "# aurora-storage benchmark report",
        "",
        f"{document.get('generated_utc', '')}, {document.get('platform', '')}, "
        f"{document.get('cpu_count', '?')} CPUs; figures are medians, baselines measured in the same run.",
        "",
        *(
            [
                "**Tiny run** (`--tiny`): every workload at a tiny size; the figures measure nothing.",
                "",
            ]
            if document.get("tiny")
            else []
        ),
        "| workload | figure | baseline | baseline figure | ratio | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in document.get("rows", []):
        unit = row.get("subject_unit", "rec")
        ratio = row.get("ratio")
        met = row.get("met")
        lines.append(
            "| {workload} | {figure} | {baseline} | {baseline_figure} | {ratio} | {goal} | {met} |".format(
                workload=row["workload"],
                figure=_rate(row.get("subject_records_per_s"), unit),
                baseline=row.get("baseline_label") or "-",
                baseline_figure=_rate(
                    row.get("baseline_records_per_s"), row.get("baseline_unit", unit)
                ),
                ratio=f"{ratio:.2f}x" if isinstance(ratio, (int, float)) else "-",
                goal=_goal(row.get("goal")),
                met={True: "yes", False: "**no**", None: "-"}[
                    met if isinstance(met, bool) else None
                ],
            )
        )
    return "\n".join(lines) + "\n"


def write_charts(document: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plot
    except ImportError:
        return []
    rows = document.get("rows", [])
    names = []
    seen = set()
    for row in rows:
        if row["workload"] not in seen:
            seen.add(row["workload"])
            names.append(row)
    written = []
    figure, axis = plot.subplots(figsize=(10, 0.45 * len(names) + 1.5))
    axis.barh(
        [row["workload"] for row in names],
        [row.get("subject_records_per_s") or 0 for row in names],
        color="#4c72b0",
    )
    axis.set_xscale("log")
    axis.set_xlabel("records (or operations) per second, log scale")
    axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(out / "throughput.png", dpi=110)
    plot.close(figure)
    written.append("throughput.png")
    with_ratio = [row for row in rows if isinstance(row.get("ratio"), (int, float))]
    if with_ratio:
        figure, axis = plot.subplots(figsize=(10, 0.45 * len(with_ratio) + 1.5))
        labels = [f"{row['workload']} vs {row.get('baseline', '')}" for row in with_ratio]
        colors = [
            "#55a868" if row.get("met") else ("#c44e52" if row.get("met") is False else "#8c8c8c")
            for row in with_ratio
        ]
        axis.barh(labels, [row["ratio"] for row in with_ratio], color=colors)
        for index, row in enumerate(with_ratio):
            goal = row.get("goal") or {}
            if goal.get("kind") == "ratio_min":
                axis.plot([goal["value"]] * 2, [index - 0.4, index + 0.4], color="black")
        axis.set_xscale("log")
        axis.set_xlabel("ratio to the same-run baseline (black tick: goal; green met, red missed)")
        axis.invert_yaxis()
        figure.tight_layout()
        figure.savefig(out / "ratios.png", dpi=110)
        plot.close(figure)
        written.append("ratios.png")
    return written
