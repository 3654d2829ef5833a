"""The figures of `bench/ingest.py` against their targets: rows/s per scenario and as a ratio to
binary COPY (per repetition too: a slow spell of the shared machine hits both sides of a pair),
CPU per row of each process, and the peer ratio to InfluxDB 1.x.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from common import Summary, summarize
from report import Figure, Target

__all__ = [
    "SCENARIOS",
    "TARGET_COLUMNAR_RATIO",
    "TARGET_PEER_RATIO",
    "TARGET_RATIO",
    "Sample",
    "figures",
    "report",
]

TARGET_RATIO = Target(">=", 0.5, "x")
TARGET_COLUMNAR_RATIO = Target(">=", 0.7, "x")
TARGET_PEER_RATIO = Target(">=", 2.0, "x")

SCENARIOS = {
    "copy": "binary COPY, 1 connection (baseline)",
    "http-1": "ingestd HTTP gzip JSON, 1 client",
    "col-1": "ingestd HTTP columnar zstd, 1 client",
    "http-2": "ingestd HTTP gzip JSON, 2 clients",
    "dup-1": "re-delivery, all duplicates, 1 client",
    "influx-1": "InfluxDB 1.x line protocol, 1 client (peer)",
}


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed pass over all batches."""

    rows: int
    wall_s: float
    ingestd_cpu_s: float
    postgres_cpu_s: float
    client_cpu_s: float
    influxd_cpu_s: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s

    def us_per_row(self, cpu_s: float) -> float:
        return 1e6 * cpu_s / self.rows


def _paired(samples: dict[str, list[Sample]], top: str, bottom: str) -> list[float]:
    """Per-repetition ratios: a slow spell of the shared machine hits both sides of a pair."""
    return [a.rows_per_s / b.rows_per_s for a, b in zip(samples[top], samples[bottom], strict=True)]


def _target(label: str, ratio: float, paired: list[float], target: Target) -> dict[str, Any]:
    print(
        f"{label}: ratio of medians {ratio:.2f}x; per-rep ratios median "
        f"{statistics.median(paired):.2f}x, range {min(paired):.2f}-{max(paired):.2f}"
    )
    return {
        "target": target.bound,
        "ratio": ratio,
        "paired_ratios": paired,
        "met": target.met(ratio),
    }


def report(
    samples: dict[str, list[Sample]], args: argparse.Namespace, extra: dict[str, Any]
) -> dict[str, Any]:
    names = [name for name in SCENARIOS if name in samples]
    rates = {name: summarize([s.rows_per_s for s in samples[name]]) for name in names}
    copy = rates["copy"]
    print()
    print(
        f"{args.rows_per_rep:,} rows per rep in {args.batch_size:,}-row batches, "
        f"{args.reps} reps, median (min-max)"
    )
    header = f"{'scenario':<44} {'rows/s':>9} {'min-max':>17} {'spread':>7} {'x COPY':>7}"
    print(header)
    print("-" * len(header))
    for name in names:
        r = rates[name]
        span = f"{r.low:,.0f}-{r.high:,.0f}"
        print(
            f"{SCENARIOS[name]:<44} {r.median:>9,.0f} {span:>17} {r.spread_pct:>6.0f}% "
            f"{r.median / copy.median:>7.2f}"
        )

    print()
    header = (
        f"{'CPU µs per row, median':<44} {'ingestd':>9} {'postgres':>9} {'influxd':>9} "
        f"{'client':>9}"
    )
    print(header)
    print("-" * len(header))
    cpu: dict[str, dict[str, Summary]] = {}
    for name in names:
        runs = samples[name]
        cpu[name] = {
            "ingestd": summarize([s.us_per_row(s.ingestd_cpu_s) for s in runs]),
            "postgres": summarize([s.us_per_row(s.postgres_cpu_s) for s in runs]),
            "influxd": summarize([s.us_per_row(s.influxd_cpu_s) for s in runs]),
            "client": summarize([s.us_per_row(s.client_cpu_s) for s in runs]),
        }
        c = {k: v.median for k, v in cpu[name].items()}
        print(
            f"{SCENARIOS[name]:<44} {c['ingestd']:>9.1f} {c['postgres']:>9.1f} "
            f"{c['influxd']:>9.1f} {c['client']:>9.1f}"
        )

    print()
    ingestd_cpu = cpu["http-1"]["ingestd"]
    print(
        f"ingestd CPU per row (parse, validate, write; 1 client): {ingestd_cpu.median:.2f} µs "
        f"(min-max {ingestd_cpu.low:.2f}-{ingestd_cpu.high:.2f})"
    )
    targets = {
        "ingest_1_client_vs_copy": _target(
            "ingest with 1 client vs binary COPY",
            rates["http-1"].median / copy.median,
            _paired(samples, "http-1", "copy"),
            TARGET_RATIO,
        )
    }
    targets["columnar_1_client_vs_copy"] = _target(
        "ingest of columnar zstd with 1 client vs binary COPY",
        rates["col-1"].median / copy.median,
        _paired(samples, "col-1", "copy"),
        TARGET_COLUMNAR_RATIO,
    )
    col_cpu = cpu["col-1"]["ingestd"]
    print(
        f"ingestd CPU per row, columnar zstd: {col_cpu.median:.2f} µs "
        f"(min-max {col_cpu.low:.2f}-{col_cpu.high:.2f})"
    )
    if "influx-1" in rates:
        targets["fleet_vs_influxdb"] = _target(
            "Fleet (ingestd, 1 client) vs InfluxDB 1.x (1 client)",
            rates["http-1"].median / rates["influx-1"].median,
            _paired(samples, "http-1", "influx-1"),
            TARGET_PEER_RATIO,
        )
    else:
        print(f"peer ratio: SKIPPED ({extra['peer']['skipped']})")
    print(f"ingestd peak RSS: {extra['ingestd_peak_rss_mib']:.0f} MiB")

    def summary_dict(s: Summary) -> dict[str, Any]:
        return {"median": s.median, "min": s.low, "max": s.high, "samples": list(s.samples)}

    return {
        "scenarios": {
            name: {
                "label": SCENARIOS[name],
                "rows_per_s": summary_dict(rates[name]),
                "ratio_to_copy": rates[name].median / copy.median,
                "cpu_us_per_row": {k: v.median for k, v in cpu[name].items()},
                "samples": [asdict(s) for s in samples[name]],
            }
            for name in names
        },
        "ingestd_cpu_us_per_row": summary_dict(ingestd_cpu),
        "ingestd_cpu_us_per_row_columnar": summary_dict(col_cpu),
        "targets": targets,
        **extra,
    }


def figures(result: dict[str, Any]) -> list[Figure]:
    sc, tg = result["scenarios"], result["targets"]
    out = [
        Figure.of(
            f"rows/s: {sc[name]['label']}",
            f"{sc[name]['rows_per_s']['median']:,.0f}",
            f"{sc[name]['rows_per_s']['min']:,.0f}-{sc[name]['rows_per_s']['max']:,.0f}",
        )
        for name in ("copy", "http-1", "col-1", "http-2", "dup-1", "influx-1")
        if name in sc
    ]

    def ratio(figure: str, key: str, target: Target) -> Figure:
        t = tg[key]
        spread = f"per rep {min(t['paired_ratios']):.2f}-{max(t['paired_ratios']):.2f}"
        return Figure.checked(figure, t["ratio"], f"{t['ratio']:.2f}x", target, spread)

    out.append(ratio("1. ingest 1 client / binary COPY", "ingest_1_client_vs_copy", TARGET_RATIO))
    out.append(
        ratio(
            "1b. ingest columnar zstd 1 client / binary COPY",
            "columnar_1_client_vs_copy",
            TARGET_COLUMNAR_RATIO,
        )
    )
    if "fleet_vs_influxdb" in tg:
        out.append(
            ratio(
                "2. Fleet / InfluxDB 1.x rows/s (1 client)", "fleet_vs_influxdb", TARGET_PEER_RATIO
            )
        )
    else:
        why = result["peer"].get("skipped")
        out.append(
            Figure(
                "2. Fleet / InfluxDB 1.x rows/s",
                "SKIPPED",
                "",
                str(TARGET_PEER_RATIO),
                f"SKIPPED: {why}",
            )
        )
    for figure, key, target in (
        ("5b. ingestd CPU µs per row, columnar zstd", "ingestd_cpu_us_per_row_columnar", ""),
        ("5. ingestd CPU µs per row (1 client)", "ingestd_cpu_us_per_row", "(regression guard)"),
    ):
        c = result[key]
        out.append(
            Figure.of(figure, f"{c['median']:.2f}", f"{c['min']:.2f}-{c['max']:.2f}", target)
        )
    return out
