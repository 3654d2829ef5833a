"""Ingest CPU per row, this tree against another commit, in one run: `bench/ingest.py` in each
tree in turn, alternated, on the same machine.

    uv run python bench/ingest_ab.py --before ../fleet-before [--alternations 3] [--rows 50000]

`--before` is a worktree of the other commit with its own virtualenv (`git worktree add
--detach ../fleet-before be68c29^ && (cd ../fleet-before && make setup)`: the commit before the
scaled layout, issue 22). Each alternation runs that tree's own `bench/ingest.py --no-peer` (its
own cluster, schema and ingestd), then this tree's, the order swapped every other time, each
with the load average it started at. ingestd's CPU per row comes from /proc (clock ticks: with
`--rows` 50,000 a step is 0.2 µs/row); a run's figure is the median of its `--reps`, and the
answer is the median over alternations of each side, with the per-alternation differences.
The ratios to binary COPY are this tree's (the other tree's COPY baseline may write another
layout). Results go to bench/results/ingest_ab-<time>.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from report import Figure, Target, finish

HERE = Path(__file__).resolve().parent.parent
JSON_RATIO = Target(">=", 0.5, "x")  # issue 26: 5,000-row batches, one client
COL_RATIO = Target(">=", 0.6, "x")


def _run(tree: Path, rows: int, reps: int) -> dict[str, Any]:
    """One `bench/ingest.py` run in `tree` with its own virtualenv: its result JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ingest.json"
        load = Path("/proc/loadavg").read_text().split()[0]
        command = [str(tree / ".venv/bin/python"), "bench/ingest.py", "--no-peer"]
        command += ["--rows", str(rows), "--reps", str(reps), "--json", str(out)]
        done = subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            sys.exit(f"{tree}: bench/ingest.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
    result["load_average"] = float(load)
    return result


def _decode(tree: Path, reps: int) -> list[float]:
    """`decode_tree.py` (this tree's file) run by `tree`'s interpreter in `tree`: µs/row."""
    command = [str(tree / ".venv/bin/python"), str(HERE / "bench/decode_tree.py")]
    done = subprocess.run(
        [*command, "--reps", str(reps)], cwd=tree, capture_output=True, text=True, timeout=600
    )
    if done.returncode:
        sys.exit(f"{tree}: decode_tree.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    samples: list[float] = json.loads(done.stdout.splitlines()[-1])["us_per_row"]
    return samples


def _cpu(result: dict[str, Any], key: str) -> float:
    return float(result[key]["median"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--before", type=Path, required=True, help="the other tree (made up)")
    parser.add_argument("--alternations", type=int, default=3)
    parser.add_argument("--rows", type=int, default=50_000, help="rows per rep")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--decode-reps", type=int, default=20, help="in-process repetitions per tree and turn"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    before = args.before.resolve()
    if not (before / ".venv/bin/python").exists():
        sys.exit(f"{before} has no .venv: run `make setup` there first")
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    decoded: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(args.alternations):
        order = [("before", before), ("after", HERE)]
        for side, tree in order if i % 2 == 0 else order[::-1]:
            decoded[side] += _decode(tree, args.decode_reps)
        for side, tree in order if i % 2 == 0 else order[::-1]:
            result = _run(tree, args.rows, args.reps)
            runs[side].append(result)
            print(
                f"{side:<6} load {result['load_average']:>5.2f}  ingestd CPU µs/row: gzip JSON "
                f"{_cpu(result, 'ingestd_cpu_us_per_row'):.2f}, columnar "
                f"{_cpu(result, 'ingestd_cpu_us_per_row_columnar'):.2f}",
                flush=True,
            )

    def quartile(samples: list[float]) -> float:
        return sorted(samples)[len(samples) // 4]

    figures = [
        Figure.of(
            "in one process: gzip JSON body to COPY bytes, µs/row: after / before",
            f"{quartile(decoded['after']):.2f} / {quartile(decoded['before']):.2f}",
            f"first quartiles; medians {statistics.median(decoded['after']):.2f} / "
            f"{statistics.median(decoded['before']):.2f}",
            "not worse",
            quartile(decoded["after"]) <= quartile(decoded["before"]),
        )
    ]
    summary: dict[str, Any] = {"decode_us_per_row": decoded}
    for label, key in (
        ("gzip JSON", "ingestd_cpu_us_per_row"),
        ("columnar zstd", "ingestd_cpu_us_per_row_columnar"),
    ):
        b = [_cpu(r, key) for r in runs["before"]]
        a = [_cpu(r, key) for r in runs["after"]]
        diffs = [x - y for x, y in zip(a, b, strict=True)]
        summary[key] = {"before": b, "after": a, "differences": diffs}
        figures.append(
            Figure.of(
                f"ingestd CPU µs/row, {label}: after / before",
                f"{statistics.median(a):.2f} / {statistics.median(b):.2f}",
                f"after - before per alternation {', '.join(f'{d:+.2f}' for d in diffs)}",
                "not worse",
                round(statistics.median(a), 2) <= round(statistics.median(b), 2),  # /proc steps
            )
        )
    for label, key, target in (
        ("gzip JSON 1 client / binary COPY (this tree)", "ingest_1_client_vs_copy", JSON_RATIO),
        ("columnar 1 client / binary COPY (this tree)", "columnar_1_client_vs_copy", COL_RATIO),
    ):
        ratios = [r["targets"][key]["ratio"] for r in runs["after"]]
        median = statistics.median(ratios)
        spread = ", ".join(f"{x:.2f}" for x in ratios)
        figures.append(Figure.of(label, f"{median:.2f}x", spread, target, target.met(median)))
    loads = [r["load_average"] for side in runs.values() for r in side]
    figures.append(
        Figure.of("load average at the runs' starts", f"{min(loads):.2f}-{max(loads):.2f}")
    )
    result = {"before": str(before), "rows": args.rows, "reps": args.reps, "summary": summary,
              "runs": runs}  # fmt: skip
    finish("ingest_ab", result, figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
