"""Every benchmark in one run: one summary table of the figures against their targets, one JSON.

    uv run python bench/run_all.py            # make bench        (~10-15 min on 2 cores)
    uv run python bench/run_all.py --quick    # make bench-quick  (~3 min, smaller sizes)

Runs each script (ingest with the InfluxDB peer, catch-up, many gateways, rollup upkeep, read
latency of the energy answers, wire bytes, and in the full run the insert-path microbenchmark) as a child process, one after another, each
writing its own JSON, then prints the summary and writes `bench/results/all-<time>.json` (or
`--json`) holding the summary and every script's full results. Each child owns and removes
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import BENCH_DIR, exit_on_sigterm, machine_info, write_results


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
        ("--devices", "20", "--days", "400", "--interval-s", "60", "--reps", "30"),
        ("--devices", "2", "--days", "400", "--interval-s", "900", "--reps", "10"),
        1800,
    ),
    Script(
        "wire",
        "wire.py",
        ("--ticks", "30", "--backlog-minutes", "1440"),
        ("--ticks", "10", "--backlog-minutes", "360"),
        600,
    ),
    Script(
        "storage",
        "storage.py",
        ("--meters", "200", "--days", "30"),
        ("--meters", "20", "--days", "8"),
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


def _verdict(met: bool | None) -> str:
    return "-" if met is None else ("MET" if met else "NOT MET")


def summary_rows(results: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """(figure, measured, spread, target, verdict) for every number the issue asks for."""
    rows: list[dict[str, Any]] = []

    def add(figure: str, measured: str, spread: str, target: str, met: bool | None) -> None:
        rows.append(
            {
                "figure": figure,
                "measured": measured,
                "spread": spread,
                "target": target,
                "verdict": _verdict(met),
            }
        )

    ingest = results.get("ingest")
    if ingest:
        sc, tg = ingest["scenarios"], ingest["targets"]
        for name in ("copy", "http-1", "col-1", "http-2", "dup-1", "influx-1"):
            if name in sc:
                r = sc[name]["rows_per_s"]
                add(
                    f"rows/s: {sc[name]['label']}",
                    f"{r['median']:,.0f}",
                    f"{r['min']:,.0f}-{r['max']:,.0f}",
                    "",
                    None,
                )
        t = tg["ingest_1_client_vs_copy"]
        add(
            "1. ingest 1 client / binary COPY",
            f"{t['ratio']:.2f}x",
            f"per rep {min(t['paired_ratios']):.2f}-{max(t['paired_ratios']):.2f}",
            ">= 0.5x",
            t["met"],
        )
        t = tg.get("columnar_1_client_vs_copy")
        if t:
            add(
                "1b. ingest columnar zstd 1 client / binary COPY",
                f"{t['ratio']:.2f}x",
                f"per rep {min(t['paired_ratios']):.2f}-{max(t['paired_ratios']):.2f}",
                ">= 0.7x",
                t["met"],
            )
        t = tg.get("fleet_vs_influxdb")
        if t:
            add(
                "2. Fleet / InfluxDB 1.x rows/s (1 client)",
                f"{t['ratio']:.2f}x",
                f"per rep {min(t['paired_ratios']):.2f}-{max(t['paired_ratios']):.2f}",
                ">= 2x",
                t["met"],
            )
        else:
            add("2. Fleet / InfluxDB 1.x rows/s", "SKIPPED", "", ">= 2x", None)
            rows[-1]["verdict"] = f"SKIPPED: {ingest['peer'].get('skipped')}"
        cc = ingest.get("ingestd_cpu_us_per_row_columnar")
        if cc:
            add(
                "5b. ingestd CPU µs per row, columnar zstd",
                f"{cc['median']:.2f}",
                f"{cc['min']:.2f}-{cc['max']:.2f}",
                "",
                None,
            )
        c = ingest["ingestd_cpu_us_per_row"]
        add(
            "5. ingestd CPU µs per row (1 client)",
            f"{c['median']:.2f}",
            f"{c['min']:.2f}-{c['max']:.2f}",
            "(regression guard)",
            None,
        )
    else:
        add("1./2./5. ingest, peer, CPU per row", "FAILED", "", "", False)

    catchup = results.get("catchup")
    if catchup:
        e2e, only = catchup["end_to_end"], catchup["ingest_only"]
        ratio = catchup["ratio_end_to_end_vs_ingest_only"]
        add(
            f"3. catch-up {catchup['rows']:,} rows: pusher->ingestd / ingest-only",
            f"{ratio:.2f}x",
            f"{e2e['rows_per_s']:,} vs {only['rows_per_s']:,} rows/s",
            ">= 0.8x",
            ratio >= 0.8,
        )
        add("3. catch-up drain time", f"{e2e['seconds']:.1f} s", "", "", None)
        add(
            "3. pusher peak RSS while draining",
            f"{e2e['pusher_peak_rss_mib']:.0f} MiB",
            "",
            "< 150 MB",
            e2e["pusher_peak_rss_mib"] * 2**20 < 150e6,
        )
        if "pusher_cpu_us_per_row" in e2e:
            add(
                "3. pusher CPU µs per row (read, encode, compress, send)",
                f"{e2e['pusher_cpu_us_per_row']:.2f}",
                f"wire format {catchup.get('wire_format', 'json')}",
                "",
                None,
            )
        add(
            "3. ingestd peak RSS while draining",
            f"{e2e['ingestd_peak_rss_mib']:.0f} MiB",
            "",
            "",
            None,
        )
    else:
        add("3. catch-up", "FAILED", "", "", False)

    gw = results.get("gateways")
    if gw:
        s, rec, base = gw["steady"], gw["recovery"], gw["baseline_1_gateway"]
        n = gw["config"]["gateways"]
        thirds = [f"{w:.0f}" for w in s["p99_ms_per_third"] if w is not None]
        add(f"4. {n} gateways: requests/s", f"{s['requests_per_s']:.0f}", "", f"{n}", None)
        add(
            f"4. {n} gateways: p50 / p95 latency",
            f"{s.get('p50_ms', 0):.0f} / {s.get('p95_ms', 0):.0f} ms",
            f"1 gateway alone: {base.get('p50_ms', 0):.0f} / {base.get('p95_ms', 0):.0f} ms",
            "",
            None,
        )
        add(
            f"4. {n} gateways: p99 latency",
            f"{s.get('p99_ms', float('nan')):.0f} ms",
            f"thirds {', '.join(thirds)} ms; errors {_errors(s['statuses'])}",
            "< 250 ms",
            gw["targets"]["steady_p99_ms"]["met"],
        )
        caught = rec["time_to_all_caught_up_s"]
        add(
            f"4. recovery: all {n} caught up after restart",
            "never" if caught is None else f"{caught:.1f} s",
            f"backlog {rec['backlog_rows_at_restart']:,} rows; drain "
            f"{rec['drain_after_first_success_s'] or float('nan'):.1f} s after first 200",
            "",
            None,
        )
        add(
            "4. recovery: 429 / 503 answers",
            f"{rec['answers_429']} / {rec['answers_503']}",
            f"outage: {_errors(gw['outage']['statuses'])}",
            "",
            None,
        )
        add(
            "4. ingestd peak RSS (recovery included)",
            f"{gw['ingestd_peak_rss_mib']:.0f} MiB",
            "",
            "",
            None,
        )
        add(
            "4. peak central DB connections",
            f"{gw['peak_db_connections']}",
            f"pool max {gw['ingestd_env'].get('INGESTD_POOL_MAX_SIZE', '4 (default)')}",
            "",
            None,
        )
    else:
        add("4. many gateways", "FAILED", "", "", False)

    rollup = results.get("rollup_cost")
    if rollup:
        ratios = rollup["ratio_per_rep"]
        add(
            "rollup upkeep cost (storage vs plain table)",
            f"{rollup['cost']:.0%}",
            f"per rep {1 - max(ratios):.0%}-{1 - min(ratios):.0%}",
            "< 20%",
            rollup["target_met"],
        )
    reads = results.get("read_latency")
    if reads:
        q = reads["queries"]
        spread = (
            f"{reads['rows']:,} rows; today's hourly read p95 {q['hourly_view']['p95_ms']:.0f} ms"
        )
        for name, label in (
            ("http_hourly", "read p95: 93-day hourly, one device (HTTP)"),
            ("http_daily", "read p95: 1-year daily, one device (HTTP)"),
            ("hourly_energy", "read p95: 93-day hourly energy (SQL)"),
            ("daily_energy", "read p95: 1-year daily energy (SQL)"),
        ):
            add(label, f"{q[name]['p95_ms']:.0f} ms", spread, "(reported)", None)
    else:
        add("read latency of the energy answers", "FAILED", "", "", False)
    wire = results.get("wire")
    if wire:
        _wire_rows(wire, add)
    else:
        add("wire bytes per row", "FAILED", "", "", False)
    storage_rows(results.get("storage"), add)
    retention_rows(results.get("retention"), add)
    fleet_rows(results.get("fleet"), add)
    return rows


def _wire_rows(wire: dict[str, Any], add: Any) -> None:
    targets = {"steady": 50.0, "backlog": 36.0}
    for mode, figures in wire["modes"].items():
        for phase, target in targets.items():
            f = figures[phase]
            columnar = mode == "auto"
            add(
                f"6. upstream bytes/row all in, {phase}, {'columnar' if mode == 'auto' else mode}",
                f"{f['bytes_per_row']:.1f}",
                f"{f['rows']:,} rows; {sum(r['requests'] for r in f['requests'].values())} requests",
                f"<= {target:.0f}" if columnar else "",
                f["bytes_per_row"] <= target if columnar else None,
            )
    bodies = next(iter(wire["modes"].values()))["bodies_alone"]["backlog_5000_rows_per_body"]
    add(
        "6. bodies alone, 5,000-row batches, bytes/row",
        f"columnar {bodies['columnar_zstd']}",
        f"gzip JSON {bodies['gzip1_json']}, Influx LP gzip-6 "
        f"{bodies['influx_line_protocol_gzip6']}, Prom remote-write "
        f"{bodies['prometheus_remote_write_snappy']}",
        "",
        None,
    )


def storage_rows(storage: dict[str, Any] | None, add: Callable[..., None]) -> None:
    """Bytes per measurement row by layout (bench/storage.py)."""
    if not storage:
        add("storage per row", "FAILED", "", "", False)
        return
    for name, r in storage["layouts"].items():
        if "skipped" in r:
            add(f"storage: {name}", "SKIPPED", r["skipped"], "", None)
            continue
        exact = r.get("values_not_exact")
        add(
            f"storage: {name} bytes per row",
            f"{r['bytes_per_row']:.1f}",
            f"{r['bytes_per_meter_year'] / 2**20:.0f} MiB per meter-year"
            + ("" if exact is None else f"; values exact: {'yes' if exact == 0 else 'NO'}"),
            "<= 100 (compressed, exact)" if name.startswith("ts-") else "",
            None,
        )
    target = storage.get("target")
    if target:
        add(
            "storage: best exact compressed layout",
            f"{target['bytes_per_row']:.1f} B/row",
            target["layout"],
            "<= 100 B/row",
            target["met"],
        )


def retention_rows(retention: dict[str, Any] | None, add: Callable[..., None]) -> None:
    """Customers endpoint and audit retention (bench/retention.py)."""
    if not retention:
        add("retention / customers endpoint", "FAILED", "", "", False)
        return
    n = retention["config"]["customers"]
    before, after = retention["customers_before"], retention["customers_after"]
    add(
        f"customers endpoint p95, {n:,} customers, a day of events",
        f"{after['p95_ms']:.0f} ms",
        f"summing ingest_events: {before['p95_ms']:.0f} ms",
        "< 200 ms",
        retention["target"]["met"],
    )
    d, p = retention["delete"], retention["partition"]
    add(
        "audit retention: batched deletes",
        f"{d['rows_per_s']:,.0f} rows/s",
        f"batch p50 {d['batch']['p50_ms']:.0f} ms, concurrent insert p99 "
        f"{d['insert_latency_during']['p99_ms']:.1f} ms (quiet "
        f"{d['insert_latency_quiet']['p99_ms']:.1f}); partition drop {1000 * p['seconds']:.0f} ms",
        "",
        None,
    )


def fleet_rows(fleet: dict[str, Any] | None, add: Callable[..., None]) -> None:
    """The fleet scenario's figures (bench/fleet.py)."""
    if not fleet:
        add("fleet at real cadence", "FAILED", "", "", False)
        return
    s, rec, tg = fleet["steady"], fleet["recovery"], fleet["targets"]
    n = fleet["config"]["gateways"]
    for kind, st in s["per_type"].items():
        add(
            f"fleet {n:,} gw: {kind} p50 / p95 / p99",
            f"{st.get('p50_ms', 0):.0f} / {st.get('p95_ms', 0):.0f} / {st.get('p99_ms', 0):.0f} ms",
            f"{st['requests'] / s['window_s']:.0f} req/s; errors {_errors(st['statuses'])}",
            "p99 < 100 ms, 0 errors",
            st.get("p99_ms", float("inf")) < 100 and not set(st["statuses"]) - {"200"},
        )
    t = tg["cpu_ms_per_request"]
    add(
        f"fleet {n:,} gw: ingestd CPU per request",
        f"{t['value']:.2f} ms",
        f"{100 * s.get('ingestd_cpu_share', 0):.0f}% of a core; PostgreSQL "
        f"{100 * s.get('pg_cpu_share', 0):.0f}%; generator {100 * s.get('client_cpu_share', 0):.0f}%",
        "<= 2 ms",
        t["met"],
    )
    per_core = fleet.get("gateways_per_core_at_50pct")
    add(
        "fleet: gateways per ingestd core at 50% CPU",
        f"{per_core:,.0f}" if per_core else "-",
        f"rows/s {s['rows_per_s']:,.0f}",
        "",
        None,
    )
    add(
        f"fleet {n:,} gw: dirty hours first -> last (max)",
        f"{s.get('dirty_first')} -> {s.get('dirty_last')}",
        f"max {s.get('dirty_max')}",
        "flat",
        None,
    )
    growth = fleet["growth_per_day_bytes"]
    add(
        f"fleet {n:,} gw: DB growth per day",
        f"{growth['database'] / 2**30:.1f} GiB",
        ", ".join(
            f"{k} {growth[k] / 2**30:.1f}"
            for k in (
                "measurements",
                "measurement_indexes",
                "ingest_events",
                "rejected_rows",
                "hourly_rollup",
            )
        ),
        "",
        None,
    )
    caught = tg["catch_up_s"]
    add(
        f"fleet: all caught up after a {fleet['config']['outage']:g} s outage",
        "never" if caught["value"] is None else f"{caught['value']:.0f} s",
        f"503s {rec['statuses'].get('503', 0)}, 429s {rec['statuses'].get('429', 0)}",
        "<= 180 s",
        caught["met"],
    )
    t = tg["peak_rss_mb"]
    add("fleet: ingestd peak RSS", f"{t['value']:.0f} MB", "", "< 300 MB", t["met"])


def _errors(statuses: dict[str, int]) -> str:
    bad = {k: v for k, v in statuses.items() if k != "200"}
    return ", ".join(f"{k}: {v}" for k, v in bad.items()) or "none"


def print_table(rows: list[dict[str, Any]]) -> None:
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in rows[0]}
    line = "  ".join(f"{k:<{widths[k]}}" for k in widths)
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(f"{r[k]!s:<{widths[k]}}" for k in widths))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, ~3 min")
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

    rows = summary_rows(results)
    print(
        f"\nSummary ({'quick' if args.quick else 'full'} run, {time.monotonic() - started:.0f} s)"
    )
    print_table(rows)
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
