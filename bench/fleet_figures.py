"""The figures of `bench/fleet.py --capacity` (`bench/fleet_capacity.py`) against issue 26's
targets, for one storage path: the largest fleet with p99 under 100 ms and no 503, with each step's
warm-up and backlog in words; CPU per batch at the last step's own rate and by encoding in the
encodings' windows; the rollup's or the continuous aggregate's backlog slope; what the generator
cost.
"""

from __future__ import annotations

from typing import Any

from report import Figure, Target, errors

__all__ = [
    "CLEAN_SHARE",
    "GENERATOR_LAG_S",
    "TARGET_CPU",
    "TARGET_GATEWAYS",
    "TARGET_P99_MS",
    "capacity_figures",
]

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
