"""``aurora-storage bench`` end to end, as a user runs it from a clone.

The installed command runs in the checkout (the README's way), on the tiny
setting (``--tiny``: every workload at a few records, a few seconds in all).
It must run the benchmarks against the installed package, whatever the
checkout holds, and write its whole report into the folder it was given.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aurora_storage import report

CHECKOUT = Path(__file__).resolve().parents[2]
COMMAND_TIMEOUT_S = 600  # a bound on a hung run, not a timing: a tiny run takes seconds
# Workloads of every benchmark file that --quick keeps.
EXPECTED_WORKLOADS = {
    "apply_batch_10k_pages[batch=256]",
    "materialize_page_100_records",
    "durable_commit_1x1",
    "durable_commit_8_threads",
    "durable_batch_100",
    "writer_recovery",
    "backtrack_flat",
    "restore_to_disk",
    "backup_overhead",
    "commit_memory_100x100B",
    "read_current_page",
    "checkpoint_flat",
    "rss_flat",
    "write_amplification[rows_100B]",
    "write_amplification[full_pages]",
    "scatter_128tib",
}


def installed_command() -> Path:
    """The console script pip installed beside this interpreter."""
    command = Path(sys.executable).parent / "aurora-storage"
    assert command.exists(), f"{command} is missing: install the package (pip install '.[test]')"
    return command


def test_bench_quick_runs_from_the_checkout_into_its_report_folder(tmp_path: Path) -> None:
    out = tmp_path / "report"
    in_checkout = CHECKOUT / ".benchmarks" / report.RATIOS_NAME
    before = in_checkout.stat().st_mtime_ns if in_checkout.exists() else None
    finished = subprocess.run(
        [str(installed_command()), "bench", "--quick", "--tiny", "--out", str(out)],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    output = finished.stdout[-4000:] + finished.stderr[-4000:]
    assert finished.returncode == 0, output
    assert "error" not in finished.stdout.lower(), output

    ratios = json.loads((out / report.RATIOS_NAME).read_text())
    assert ratios["tiny"] is True
    workloads = {row["workload"] for row in ratios["rows"]}
    assert workloads >= EXPECTED_WORKLOADS, sorted(EXPECTED_WORKLOADS - workloads)
    assert not any("large_working_set" in name for name in workloads), "--quick leaves it out"
    threads = [row for row in ratios["rows"] if row["workload"] == "durable_commit_8_threads"]
    assert {row["baseline"] for row in threads} == {"baseline-A", "baseline-B"}
    assert all(row["baseline_records_per_s"] > 0 for row in threads)

    timings = json.loads((out / report.PYTEST_BENCHMARK_NAME).read_text())
    assert {entry["extra_info"].get("workload") for entry in timings["benchmarks"]} >= {
        "durable_commit_1x1",
        "backtrack_flat",
    }
    compared = subprocess.run(
        [
            str(Path(sys.executable).parent / "pytest-benchmark"),
            "compare",
            str(out / report.PYTEST_BENCHMARK_NAME),
        ],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert compared.returncode == 0, compared.stderr
    assert "test_durable_commit_1x1" in compared.stdout

    table = (out / "report.md").read_text()
    assert "| durable_commit_1x1 |" in table and "Tiny run" in table
    after = in_checkout.stat().st_mtime_ns if in_checkout.exists() else None
    assert after == before, "the run wrote into the checkout's .benchmarks folder"
