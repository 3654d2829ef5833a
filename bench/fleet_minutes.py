"""A fleet run minute by minute (`bench/fleet.py --capacity`): where its 503s and its slow answers
came from.

For each minute from the start of a step (the warm-up is the first): the requests sent and their
503s (full sets and measurement batches apart), the latency of the 200s of first tries and of
retries apart (a retry comes back at its booked return: regular ticks and the returns of a herd
are told apart), and what ingestd said of itself meanwhile (`fleet_probe.admission`): its
capacity refusals by reason, how often its event loop woke over 0.1 s / 0.25 s late, the measured
capacity, how far ahead returns were booked, the longest waiting line and pool queue sampled, and
its and PostgreSQL's share of a core.

Each minute also gives ingestd's CPU per request answered in it (its process tree's CPU from
/proc over the minute, divided by the answers of any status that arrived in it), marked clean
when nearly every answer (CLEAN_SHARE) was a measurement batch's 200: a clean minute of a large
fleet is the CPU per batch at that fleet's own rate, where the background loops' share is spread
over many more batches than at `--encoding-gateways` and the caches stay warmer between
requests.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from simulator import BatchRecord

__all__ = ["clean_cpu", "minute_lines", "per_minute", "refusals"]

CLEAN_SHARE = 0.99  # of a minute's answers: measurement batches answered 200
_COUNTERS = ("refused_line_full", "refused_wait_timeout", "lag_over_100ms", "lag_over_250ms")


def refusals(
    records: Sequence[BatchRecord], start: float, bucket_s: float = 60.0
) -> dict[str, Any]:
    """The 503s of a fleet run per minute from its start, full sets (sites, devices) and
    measurement batches apart, and when the last one was sent: whether the warm-up's herd
    drained, and how fast."""
    refused = [r for r in records if r.status == "503"]
    end = max((r.sent_at for r in records), default=start)
    buckets = [[0, 0] for _ in range(int((end - start) // bucket_s) + 1)]
    for r in refused:
        buckets[int((r.sent_at - start) // bucket_s)][r.batch_type == "measurements"] += 1
    last = max((r.sent_at for r in refused), default=None)
    return {
        "refused_per_minute": [{"full_sets": f, "measurements": m} for f, m in buckets],
        "refused_by_detail": dict(Counter(r.detail or "-" for r in refused)),
        "last_503_s": None if last is None else last - start,
    }


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if len(latencies) < 2:
        return {}
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": q[49], "p99_ms": q[98], "max_ms": max(latencies)}


def per_minute(
    records: Sequence[BatchRecord],
    samples: Sequence[dict[str, Any]],
    start: float,
    end: float,
    bucket_s: float = 60.0,
) -> list[dict[str, Any]]:
    """One dict per `bucket_s` from `start` to `end` (see the module docstring)."""
    out = []
    t0 = start
    while t0 < end - 1.0:
        t1 = min(end, t0 + bucket_s)
        inside = [r for r in records if t0 <= r.sent_at < t1]
        answered = [r for r in records if t0 <= r.sent_at + r.latency_s < t1]
        first = [1000 * r.latency_s for r in inside if r.status == "200" and not r.attempt]
        again = [1000 * r.latency_s for r in inside if r.status == "200" and r.attempt]
        minute: dict[str, Any] = {
            "from_s": t0 - start,
            "requests": len(inside),
            "retries": sum(1 for r in inside if r.attempt),
            "refused_full_sets": sum(
                1 for r in inside if r.status == "503" and r.batch_type != "measurements"
            ),
            "refused_measurements": sum(
                1 for r in inside if r.status == "503" and r.batch_type == "measurements"
            ),
            "other_errors": sum(1 for r in inside if r.status not in ("200", "503")),
            "first_tries": _percentiles(first),
            "retried": _percentiles(again),
            "answered": len(answered),
            "clean": bool(answered)
            and sum(1 for r in answered if r.status == "200" and r.batch_type == "measurements")
            >= CLEAN_SHARE * len(answered),
        }
        seen = [s for s in samples if t0 <= s["t"] <= t1]
        before = [s for s in samples if s["t"] < t0]
        if seen:
            a, b = (before[-1] if before else seen[0]), seen[-1]
            for key in _COUNTERS:
                if key in a and key in b:
                    minute[key] = b[key] - a[key]
            if b["t"] > a["t"]:
                span = b["t"] - a["t"]
                minute["ingestd_cpu_share"] = (b["ingestd_cpu_s"] - a["ingestd_cpu_s"]) / span
                minute["pg_cpu_share"] = (b["pg_cpu_s"] - a["pg_cpu_s"]) / span
                if answered:  # the samples' span, scaled to the minute's answers
                    minute["cpu_ms_per_answer"] = (
                        1000 * minute["ingestd_cpu_share"] * (t1 - t0) / len(answered)
                    )
            for key in ("waiting", "pool_waiting", "booked_ahead_s", "slots_in_use"):
                values = [s[key] for s in seen if key in s]
                if values:
                    minute[f"{key}_max"] = max(values)
            if "capacity_per_s" in b:
                minute["capacity_per_s"] = b["capacity_per_s"]
        out.append(minute)
        t0 = t1
    return out


def clean_cpu(minutes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """ingestd's CPU per answer over a step's clean minutes together (their CPU over their
    answers), and which minutes they were (from 0: the warm-up)."""
    clean = [m for m in minutes if m["clean"] and "cpu_ms_per_answer" in m]
    answers = sum(m["answered"] for m in clean)
    if not answers:
        return {"clean_minutes": []}
    cpu_ms = sum(m["cpu_ms_per_answer"] * m["answered"] for m in clean)
    return {
        "clean_minutes": [round(m["from_s"] / 60) for m in clean],
        "clean_answers": answers,
        "clean_cpu_ms_per_batch": cpu_ms / answers,
    }


def _ms(stats: dict[str, float], key: str) -> str:
    return f"{stats[key]:.0f}" if key in stats else "-"


def _cpu(minute: dict[str, Any]) -> str:
    if "cpu_ms_per_answer" not in minute:
        return "-"
    clean = "clean" if minute["clean"] else "not clean"
    return f"{minute['cpu_ms_per_answer']:.2f} ms ({minute['answered']:,} answers, {clean})"


def minute_lines(minutes: Sequence[dict[str, Any]]) -> list[str]:
    """The minutes as text, one line each."""
    lines = []
    for m in minutes:
        share = m.get("ingestd_cpu_share")
        pg = m.get("pg_cpu_share")
        lines.append(
            f"    min {m['from_s'] / 60:4.1f}: {m['requests']:6,} req ({m['retries']:,} retries), "
            f"503 {m['refused_full_sets']:,}+{m['refused_measurements']:,} (line full "
            f"{m.get('refused_line_full', '-')}, wait timeout {m.get('refused_wait_timeout', '-')})"
            f", other {m['other_errors']}; 200 p50/p99 first tries "
            f"{_ms(m['first_tries'], 'p50_ms')}/{_ms(m['first_tries'], 'p99_ms')} ms, retries "
            f"{_ms(m['retried'], 'p50_ms')}/{_ms(m['retried'], 'p99_ms')} ms; loop late >0.1 s "
            f"{m.get('lag_over_100ms', '-')}x, >0.25 s {m.get('lag_over_250ms', '-')}x; "
            f"capacity {m.get('capacity_per_s', 0):.0f}/s, booked ahead max "
            f"{m.get('booked_ahead_s_max', 0):.0f} s, waiting max {m.get('waiting_max', '-')}, "
            f"pool queue max {m.get('pool_waiting_max', '-')}; ingestd "
            f"{'-' if share is None else f'{100 * share:.0f}%'}, PostgreSQL "
            f"{'-' if pg is None else f'{100 * pg:.0f}%'}; "
            f"CPU per answer {_cpu(m)}"
        )
    return lines
