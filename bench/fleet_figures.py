"""The figures of `bench/fleet.py` against their targets.

The default run's (`print_run`, `run_figures`): latency per batch type in the steady phase,
ingestd's CPU per request, the dirty hours, the database's growth, the catch-up after the
outage, ingestd's peak RSS. `--capacity`'s (`bench/fleet_capacity.py`), for one storage path,
against issue 26's targets (`capacity_figures`): the largest fleet with p99 under 100 ms and no
503, with each step's warm-up and backlog in words; CPU per batch at the last step's own rate
and by encoding in the encodings' windows; the rollup's or the continuous aggregate's backlog
slope; what the generator cost.
"""

from __future__ import annotations

import argparse
from typing import Any

from report import Figure, Target, errors
from simulator import TYPES

__all__ = [
    "CLEAN_SHARE",
    "GENERATOR_LAG_S",
    "TARGET_CPU",
    "TARGET_GATEWAYS",
    "TARGET_P99_MS",
    "capacity_figures",
    "print_run",
    "run_figures",
]

TARGET_P99 = Target("<", 100.0, " ms", also="0 errors", of="p99")  # per batch type, steady
TARGET_CPU_PER_REQUEST = Target("<=", 2.0, " ms")
TARGET_CATCH_UP = Target("<=", 180.0, " s")
TARGET_RSS = Target("<", 300.0, " MB")
TARGET_P99_MS = 100.0
TARGET_GATEWAYS = Target(">=", 10_000, " gateways", also="p99 < 100 ms, no 503")
TARGET_CPU = {
    "json": Target("<=", 2.0, " ms", of="CPU per batch"),
    "columnar": Target("<=", 1.5, " ms", of="CPU per batch"),
}
GENERATOR_LAG_S = 0.1
CLEAN_SHARE = 0.99  # of a window's requests: measurement batches answered 200


def _step_text(step: dict[str, Any]) -> str:
    p99 = step["p99_ms"]
    verdict = "ok" if step["passed"] else "FAIL"
    mark = " generator-bound" if step["generator_bound"] else ""
    warm = step["warmup"]["statuses"]
    behind = step.get("watermark_behind_max_s")
    cagg = "" if behind is None else f", cagg watermark behind max {behind / 60:.0f} min"
    due = step.get("frontiers_behind_max")
    if due is not None:
        cagg += (
            f", stored-energy steps due max {due:,} (at the end {step['frontiers_behind_last']:,})"
            f", new devices none stored yet max {step.get('frontiers_new_max') or 0:,}"
            f" (at the end {step.get('frontiers_new_last') or 0:,})"
        )
    per_minute = ", ".join(
        f"{m['full_sets']:,}+{m['measurements']:,}" for m in step.get("refused_per_minute", [])
    )
    last = step.get("last_503_s")
    return (
        f"{step['gateways']:,} {verdict} (p99 {'-' if p99 is None else f'{p99:.0f}'} ms, "
        f"errors {errors(step['all']['statuses'])}; warm-up minute: errors {errors(warm)} of "
        f"{sum(warm.values()):,}; 503s per minute from the start (full sets+measurements) "
        f"{per_minute or '-'}, the last {'none' if last is None else f'at {last:.0f} s'} "
        f"({', '.join(f'{k}: {n:,}' for k, n in step.get('refused_by_detail', {}).items())}); "
        f"hourly_dirty {step.get('dirty_first')} -> {step.get('dirty_last')}{cagg}{mark})"
    )


def capacity_figures(result: dict[str, Any]) -> list[Figure]:
    """The four answers of issue 26 items 3-4 for one storage path."""
    path = result["storage"]
    if "skipped" in result:
        return [Figure(f"fleet capacity ({path})", "-", result["skipped"], "", "SKIPPED")]
    steps, largest = result["steps"], result["largest_passing"]
    out = [
        Figure.checked(
            f"fleet capacity ({path}): largest fleet, one ingestd",
            largest,
            "none passed" if largest is None else f"{largest:,} gateways",
            TARGET_GATEWAYS,
            "; ".join(_step_text(s) for s in steps)
            + ("; search budget ended it" if steps[-1].get("budget_ended_search") else ""),
        )
    ]
    out.extend(_step_cpu_figure(path, steps[-1]))
    enc = result.get("encodings")
    if enc is not None:  # not with --encoding-duration 0: the search only
        out.extend(_encoding_figures(path, enc, result.get("idle_after", {})))
    whole = result["whole_run"]
    lags = [s.get("generator_loop_lag_max_s", 0.0) for s in steps]
    shares = [s.get("client_cpu_share", 0.0) for s in steps]
    out.append(
        Figure.of(
            f"fleet ({path}): what the generator cost",
            f"{100 * max(shares, default=0):.0f}% of a core (most, at a step)",
            f"loop lag max {max(lags, default=0):.2f} s (above {GENERATOR_LAG_S:g} s a step is "
            f"generator-bound); ingestd {100 * whole.get('ingestd_cpu_share', 0):.0f}% (idle "
            f"{100 * result['idle'].get('ingestd_cpu_share', 0):.1f}% empty, "
            f"{100 * result.get('idle_after', {}).get('ingestd_cpu_share', 0):.1f}% after the "
            "fleet), "
            f"PostgreSQL {100 * whole.get('pg_cpu_share', 0):.0f}% over the run",
        )
    )
    return out


def _step_cpu_figure(path: str, step: dict[str, Any]) -> list[Figure]:
    """CPU per batch at the last step's own rate (its encoding, `--step-encoding`), over its
    clean minutes: the fleet's real cadence, where the encodings' windows run a smaller fleet."""
    cpu = step.get("clean_cpu_ms_per_batch")
    if cpu is None:
        return []
    encoding = step.get("encoding", "json")
    return [
        Figure.checked(
            f"fleet ({path}, {step['gateways']:,} gw step): ingestd CPU per batch, {encoding}",
            cpu,
            f"{cpu:.2f} ms",
            TARGET_CPU[encoding],
            f"over the step's clean minutes {step['clean_minutes']} (0: the warm-up; a minute is "
            f"clean when {CLEAN_SHARE:.0%} of its answers are measurement batches answered 200): "
            f"all of ingestd's CPU over them / their {step['clean_answers']:,} answers",
        )
    ]


def _encoding_figures(path: str, enc: dict[str, Any], idle: dict[str, Any]) -> list[Figure]:
    """CPU per batch by encoding (all of ingestd's CPU per request answered; beside it the idle
    rate after the fleet, `idle`, and the figure net of it) and the backlog's slope."""
    out: list[Figure] = []
    idle_share = idle.get("ingestd_cpu_share")
    for encoding in ("json", "columnar"):
        st = enc[encoding]
        cpu = st.get("ingestd_cpu_ms_per_batch")
        net = None
        if cpu is not None and idle_share is not None and st["requests_per_s"]:
            net = max(0.0, cpu - 1000 * idle_share / st["requests_per_s"])
        idle_text = (
            "-"
            if idle_share is None
            else f"{1000 * idle_share:.1f} ms/s = {1000 * idle_share / st['requests_per_s']:.2f} "
            f"ms per batch at this rate"
        )
        gen = st.get("generator_cpu_ms_per_request")
        figure = Figure.checked(
            f"fleet ({path}, {enc['gateways']:,} gw): ingestd CPU per batch, {encoding}",
            cpu,
            "-" if cpu is None else f"{cpu:.2f} ms",
            TARGET_CPU[encoding],
            f"all of ingestd's CPU / requests answered; its idle rate after the fleet "
            f"{idle_text}, net of it {'-' if net is None else f'{net:.2f}'} ms; "
            f"{st['requests_per_s']:.1f} requests/s; of {st['all']['requests']:,} requests "
            f"{st.get('small_batches_ok', 0):,} measurement batches answered 200 (of "
            f"{st['rows_per_batch'] or 0:.0f} rows); ingestd "
            f"{100 * st.get('ingestd_cpu_share', 0):.0f}% of a core, PostgreSQL "
            f"{100 * st.get('pg_cpu_share', 0):.0f}%; errors {errors(st['all']['statuses'])}; "
            f"generator {'-' if gen is None else f'{gen:.2f}'} ms per request, loop lag max "
            f"{st.get('generator_loop_lag_max_s', 0):.2f} s"
            + (f"; {st['pinned']}" if st.get("pinned") else ""),
        )
        if not st.get("clean", True):
            figure = Figure(
                figure.figure,
                figure.measured,
                figure.spread,
                figure.target,
                "NOT CLEAN (503s or full sets in the window: not a small batch's cost)",
            )
        out.append(figure)
    backlog = enc["backlog"]
    if path == "timescaledb":
        slope = backlog.get("invalidations_slope_per_min")
        behind = backlog.get("watermark_behind_max_s")
        run_s = backlog.get("refresh_run_max_s")
        out.append(
            Figure.of(
                f"fleet ({path}): cagg backlog slope",
                "-" if slope is None else f"{slope:+.1f} invalidations/min",
                f"invalidation rows {backlog.get('invalidations_first')} -> "
                f"{backlog.get('invalidations_last')}; watermark behind max "
                f"{'-' if behind is None else f'{behind / 60:.0f} min'}; refresh job run max "
                f"{'-' if run_s is None else f'{run_s:.1f} s'}; back-fill marks "
                f"{backlog.get('dirty_first')} -> {backlog.get('dirty_last')}",
                "flat",
            )
        )
    else:
        slope = backlog.get("dirty_slope_per_min")
        out.append(
            Figure.of(
                f"fleet ({path}): rollup backlog slope (fleet.hourly_dirty)",
                "-" if slope is None else f"{slope:+.1f} marks/min",
                f"marks {backlog.get('dirty_first')} -> {backlog.get('dirty_last')} (max "
                f"{backlog.get('dirty_max')}); {backlog.get('dirty_writes_per_s') or 0:,.0f} "
                f"mark writes/s; over {backlog.get('span_s', 0):.0f} s at "
                f"{enc['gateways']:,} gateways",
                "flat",
            )
        )
    return out


def _ms(stats: dict[str, Any], key: str) -> str:
    return f"{stats[key]:.0f}" if key in stats else "-"


def print_run(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    s, rec, out = result["steady"], result["recovery"], result["outage"]
    print()
    print(
        f"{args.gateways:,} gateways ({result['meters']:,} meters), a tick every "
        f"{args.interval:g} s, full sets {args.full_sets}, one ingestd; steady {s['window_s']:.0f} s"
    )
    header = (
        f"{'batch type':<14} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>7}  statuses"
    )
    print(header)
    print("-" * len(header))
    for t in (*TYPES, "all"):
        st = s["per_type"][t] if t != "all" else s["all"]
        print(
            f"{t:<14} {st['requests'] / s['window_s']:>7.1f} {_ms(st, 'p50_ms'):>6} "
            f"{_ms(st, 'p95_ms'):>6} {_ms(st, 'p99_ms'):>6} {_ms(st, 'max_ms'):>7}  {st['statuses']}"
        )
    print(
        f"rows/s {s['rows_per_s']:,.0f}; ingestd {100 * s.get('ingestd_cpu_share', 0):.0f}% of a "
        f"core ({s['ingestd_cpu_ms_per_request']:.2f} ms CPU per request), RSS max "
        f"{s.get('ingestd_rss_max_mib', 0):.0f} MiB; PostgreSQL {100 * s.get('pg_cpu_share', 0):.0f}%; "
        f"generator {100 * s.get('client_cpu_share', 0):.0f}%; DB connections max "
        f"{s.get('connections_max')}; dirty hours {s.get('dirty_first')} -> {s.get('dirty_last')} "
        f"(max {s.get('dirty_max')}, {s.get('dirty_writes_per_s') or 0:,.0f} mark writes/s); stored-energy steps due "
        f"max {s.get('frontiers_behind_max')} (at the end {s.get('frontiers_behind_last')}), new devices none stored "
        f"yet max {s.get('frontiers_new_max')} (at the end {s.get('frontiers_new_last')}); generator loop lag max "
        f"{s.get('generator_loop_lag_max_s', 0):.1f} s"
        " (above ~0.1 s the generator, not ingestd, sets the latencies)"
    )
    growth = result["growth_per_day_bytes"]
    print(
        "growth per day (GiB): "
        + ", ".join(f"{k} {v / 2**30:.2f}" for k, v in growth.items() if not k.endswith("rows"))
    )
    print(
        f"outage {args.outage:g} s: {out['requests']} requests {out['statuses']}; backlog "
        f"{out['backlog_rows_at_restart']:,} rows; recovery: all caught up in "
        f"{rec['time_to_all_caught_up_s'] or float('nan'):.1f} s ({rec['gateways_caught_up']}/"
        f"{args.gateways}), statuses {rec['statuses']}, ingestd peak RSS "
        f"{result['ingestd_peak_rss_mib']:.0f} MiB"
    )
    share = s.get("ingestd_cpu_share") or 0.0
    result["gateways_per_core_at_50pct"] = args.gateways * 0.5 / share if share else None
    return result


def run_figures(result: dict[str, Any]) -> list[Figure]:
    s, rec = result["steady"], result["recovery"]
    n = result["config"]["gateways"]
    out = [
        Figure.checked(
            f"fleet {n:,} gw: {kind} p50 / p95 / p99",
            st.get("p99_ms", float("inf")),
            f"{st.get('p50_ms', 0):.0f} / {st.get('p95_ms', 0):.0f} / {st.get('p99_ms', 0):.0f} ms",
            TARGET_P99,
            f"{st['requests'] / s['window_s']:.0f} req/s; errors {errors(st['statuses'])}",
            also=not set(st["statuses"]) - {"200"},
        )
        for kind, st in s["per_type"].items()
    ]
    per_core = result.get("gateways_per_core_at_50pct")
    growth = result["growth_per_day_bytes"]
    parts = (
        "measurements",
        "measurement_indexes",
        "ingest_events",
        "rejected_rows",
        "hourly_rollup",
    )
    caught = rec["time_to_all_caught_up_s"]
    rss_mb = result["ingestd_peak_rss_mib"] * 1.048576
    return [
        *out,
        Figure.checked(
            f"fleet {n:,} gw: ingestd CPU per request",
            s["ingestd_cpu_ms_per_request"],
            f"{s['ingestd_cpu_ms_per_request']:.2f} ms",
            TARGET_CPU_PER_REQUEST,
            f"{100 * s.get('ingestd_cpu_share', 0):.0f}% of a core; PostgreSQL "
            f"{100 * s.get('pg_cpu_share', 0):.0f}%; generator "
            f"{100 * s.get('client_cpu_share', 0):.0f}%",
        ),
        Figure.of(
            "fleet: gateways per ingestd core at 50% CPU",
            f"{per_core:,.0f}" if per_core else "-",
            f"rows/s {s['rows_per_s']:,.0f}",
        ),
        Figure.of(
            f"fleet {n:,} gw: dirty hours first -> last (max)",
            f"{s.get('dirty_first')} -> {s.get('dirty_last')}",
            f"max {s.get('dirty_max')}; mark writes/s {s.get('dirty_writes_per_s') or 0:,.0f}",
            "flat",
        ),
        Figure.of(
            f"fleet {n:,} gw: DB growth per day",
            f"{growth['database'] / 2**30:.1f} GiB",
            ", ".join(f"{k} {growth[k] / 2**30:.1f}" for k in parts),
        ),
        Figure.checked(
            f"fleet: all caught up after a {result['config']['outage']:g} s outage",
            caught,
            "never" if caught is None else f"{caught:.0f} s",
            TARGET_CATCH_UP,
            f"503s {rec['statuses'].get('503', 0)}, 429s {rec['statuses'].get('429', 0)}",
        ),
        Figure.checked("fleet: ingestd peak RSS", rss_mb, f"{rss_mb:.0f} MB", TARGET_RSS),
    ]
