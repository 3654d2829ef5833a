"""Every benchmark in one run: one summary table of the figures against their targets, one JSON.

    uv run python bench/run_all.py            # make bench
    uv run python bench/run_all.py --quick    # make bench-quick (smaller sizes)

Runs each script of SCRIPTS as a child process, one after another, each writing its own JSON
with its figures against its targets (report.py), then prints those figures as one summary and
writes `bench/results/all-<time>.json` (or `--json`) holding the summary and every script's
full results. How long each takes: bench/README.md. Each child owns and removes
what it starts; Ctrl-C or SIGTERM here is passed on to the running child, which unwinds, and a
child past its time limit is stopped the same way.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import BENCH_DIR, exit_on_sigterm, machine_info, write_results
from report import Figure, print_figures


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    file: str
    full: tuple[str, ...]
    quick: tuple[str, ...] | None  # None: left out of the quick run
    time_limit_s: float


SCRIPTS = (
    Script(
        "ingest",
        "ingest.py",
        ("--rows", "100000", "--reps", "5"),
        ("--rows", "30000", "--reps", "3"),
        420,
    ),
    Script("catchup", "catchup.py", ("--rows", "1000000"), ("--rows", "200000"), 600),
    Script("encoder", "encoder.py", (), ("--batches", "4", "--reps", "3"), 300),
    Script("request_parts", "request_parts.py", (), ("--reps", "10", "--requests", "50"), 300),
    Script(
        "footprint",
        "footprint.py",
        ("--duration", "300", "--idle-s", "60"),
        ("--duration", "30", "--idle-s", "10"),
        600,
    ),
    Script(
        "gateways",
        "gateways.py",
        ("--gateways", "200", "--duration", "30", "--outage", "20"),
        ("--gateways", "200", "--duration", "12", "--outage", "10", "--baseline-duration", "5"),
        420,
    ),
    Script(
        "rollup_cost",
        "rollup_cost.py",
        ("--rows", "100000", "--reps", "5"),
        ("--rows", "30000", "--reps", "3"),
        300,
    ),
    Script("insert_paths", "insert_paths.py", ("--rows", "100000", "--reps", "3"), None, 300),
    Script(
        "read_latency",
        "read_latency.py",
        ("--devices", "50", "--days", "370", "--interval-s", "150", "--reps", "30"),
        ("--devices", "2", "--days", "366", "--interval-s", "900", "--reps", "5"),
        2400,
    ),
    Script(
        "wire",
        "wire.py",
        ("--ticks", "30", "--backlog-minutes", "1440"),
        ("--ticks", "10", "--backlog-minutes", "360"),
        600,
    ),
    Script(
        "health_report",
        "health_report.py",
        ("--gateways", "200", "--reports", "5000"),
        ("--gateways", "50", "--reports", "1000"),
        300,
    ),
    Script(
        "reconcile",
        "reconcile.py",
        ("--meters", "50", "--days", "35"),
        ("--quick",),
        900,
    ),
    Script(
        "storage",
        "storage.py",
        ("--meters", "200", "--days", "30"),
        ("--meters", "20", "--days", "8"),
        3600,
    ),
    Script(
        "convert",
        "convert.py",
        ("--meters", "200", "--days", "7"),
        ("--meters", "20", "--days", "2", "--load-s", "5"),
        1800,
    ),
    Script(
        "retention",
        "retention.py",
        ("--customers", "10000", "--events", "288", "--runs", "3"),
        ("--customers", "1000", "--events", "72", "--runs", "3"),
        900,
    ),
    Script(
        "fleet",
        "fleet.py",
        ("--gateways", "10000", "--duration", "600", "--outage", "300"),
        (
            "--gateways",
            "1000",
            "--warmup",
            "30",
            "--duration",
            "45",
            "--outage",
            "20",
            "--recovery-timeout",
            "90",
        ),
        2700,
    ),
)


def run_script(script: Script, args: Sequence[str], out: Path) -> tuple[dict[str, Any] | None, str]:
    """Run one script to completion (or its time limit); its results, or None and why not."""
    command = [sys.executable, str(BENCH_DIR / script.file), *args, "--json", str(out)]
    print(f"\n=== {script.name}: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    child = subprocess.Popen(command, cwd=BENCH_DIR.parent)
    try:
        child.wait(script.time_limit_s)
    except subprocess.TimeoutExpired:
        _stop(child)
        return None, f"exceeded {script.time_limit_s:g} s"
    except BaseException:
        _stop(child)
        raise
    print(f"=== {script.name}: {time.monotonic() - started:.0f} s", flush=True)
    if child.returncode != 0 or not out.exists():
        return None, f"exit status {child.returncode}"
    return json.loads(out.read_text()), ""


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)


def collect(
    results: dict[str, dict[str, Any] | None], failures: dict[str, str]
) -> list[dict[str, Any]]:
    """Every script's figures in the order the scripts ran; a failed script is one row."""
    rows: list[dict[str, Any]] = []
    for name, result in results.items():
        if result is None:
            rows.append(asdict(Figure.of(name, "FAILED", failures.get(name, ""), "", False)))
        else:
            rows.extend(result.get("figures", []))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--only", nargs="*", help="run only these scripts (by name)")
    parser.add_argument("--json", type=Path, help="write the combined results here")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    started = time.monotonic()
    results: dict[str, dict[str, Any] | None] = {}
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="fleet-bench-all-") as tmp:
        for script in SCRIPTS:
            script_args = script.quick if args.quick else script.full
            if script_args is None or (args.only and script.name not in args.only):
                continue
            results[script.name], why = run_script(
                script, script_args, Path(tmp) / f"{script.name}.json"
            )
            if why:
                failures[script.name] = why
                print(f"=== {script.name} FAILED: {why}", file=sys.stderr)

    rows = collect(results, failures)
    runtime = f"{'quick' if args.quick else 'full'} run, {time.monotonic() - started:.0f} s"
    print_figures(rows, f"Summary ({runtime})")
    path = write_results(
        "all",
        {
            "mode": "quick" if args.quick else "full",
            "summary": rows,
            "failures": failures,
            "machine": machine_info(),
            "runtime_s": time.monotonic() - started,
            "results": results,
        },
        args.json,
    )
    print(f"results: {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
