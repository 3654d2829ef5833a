"""The obviously-correct reference for energy per hour and per local day, from the raw rows.

Slow and simple on purpose: it never looks at the hourly aggregate. For each register it walks
the samples that carry it in time order; each consecutive pair (a, b) is a segment whose step is
b - a, or b when the register dropped (a reset: the increase across it is the new value). The
energy of an interval [start, end) is the sum over segments of step x (time of the segment inside
the interval) / (segment duration). Nothing beyond the first or last sample counts. This is the
rule of docs/ENERGY.md; the production SQL (ingestd/storage/energy.py) computes the same from
per-hour summaries and must agree to 1e-9 relative on both storage paths.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

REGISTERS = ("energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh")
AVERAGES = ("p_total", "v1", "v2", "v3", "i1", "i2", "i3", "pf_total", "freq")
ESTIMATED_SPACING_FACTOR = 1.5
HOUR = timedelta(hours=1)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def floor_hour(moment: datetime) -> datetime:
    return _EPOCH + HOUR * ((moment - _EPOCH) // HOUR)


def ceil_hour(moment: datetime) -> datetime:
    floor = floor_hour(moment)
    return floor if floor == moment else floor + HOUR


def _seconds(delta: timedelta) -> float:
    """Exact microseconds, then one rounding to float (as the SQL does)."""
    return (delta // timedelta(microseconds=1)) / 1e6


@dataclass(frozen=True)
class Sample:
    time: datetime
    values: dict[str, float | None]


@dataclass(frozen=True)
class Segment:
    start: datetime
    end: datetime
    step: float
    reset: bool

    @property
    def seconds(self) -> float:
        return _seconds(self.end - self.start)


def segments(samples: Sequence[Sample], register: str) -> list[Segment]:
    carried = sorted(
        (s.time, s.values[register]) for s in samples if s.values.get(register) is not None
    )
    out = []
    for (t0, v0), (t1, v1) in itertools.pairwise(carried):
        assert v0 is not None and v1 is not None
        out.append(Segment(t0, t1, v1 - v0 if v1 >= v0 else max(v1, 0.0), v1 < v0))
    return out


def usual_interval_s(samples: Sequence[Sample], lo: datetime, hi: datetime) -> float | None:
    """Median of the hours' mean spacing over the non-empty hours from the hour holding `lo` up to
    `hi`, plus the nearest non-empty hour on each side; else the median spacing between them."""
    hours: dict[datetime, list[datetime]] = defaultdict(list)
    for s in samples:
        hours[floor_hour(s.time)].append(s.time)
    start = floor_hour(lo)
    chosen = sorted(h for h in hours if start <= h < hi)
    before = [h for h in hours if h < start]
    after = [h for h in hours if h >= hi]
    if before:
        chosen.insert(0, max(before))
    if after:
        chosen.append(min(after))
    within = [
        _seconds(max(hours[h]) - min(hours[h])) / (len(hours[h]) - 1)
        for h in chosen
        if len(hours[h]) > 1
    ]
    if within:
        return statistics.median(within)
    across = [_seconds(min(hours[b]) - max(hours[a])) for a, b in itertools.pairwise(chosen)]
    return statistics.median(across) if across else None


@dataclass
class Interval:
    start: datetime
    end: datetime
    samples: int
    energy: dict[str, float | None]
    energy_reset: bool
    energy_estimated: bool
    expected_samples: float | None
    averages: dict[str, float | None]
    minimum: float | None
    maximum: float | None


def _energy(
    per_register: dict[str, list[Segment]],
    samples: Sequence[Sample],
    start: datetime,
    end: datetime,
    usual: float | None,
) -> tuple[dict[str, float | None], bool, bool]:
    energy: dict[str, float | None] = {}
    reset = estimated = False
    for register, segs in per_register.items():
        total: float | None = None
        for seg in segs:
            overlap = min(seg.end, end) - max(seg.start, start)
            if overlap > timedelta(0):
                total = (total or 0.0) + seg.step * _seconds(overlap) / seg.seconds
                reset = reset or seg.reset
                if usual is not None and seg.seconds > ESTIMATED_SPACING_FACTOR * usual:
                    estimated = True
        if total is None and any(
            start <= s.time < end and s.values.get(register) is not None for s in samples
        ):
            total = 0.0
        energy[register] = total
    return energy, reset, estimated


def _stats(rows: list[Sample]) -> tuple[dict[str, float | None], float | None, float | None]:
    averages: dict[str, float | None] = {}
    for field in AVERAGES:
        values = [v for s in rows if (v := s.values.get(field)) is not None]
        averages[field] = sum(values) / len(values) if values else None
    powers = [v for s in rows if (v := s.values.get("p_total")) is not None]
    return averages, (min(powers) if powers else None), (max(powers) if powers else None)


def _intervals(samples: Sequence[Sample], edges: Sequence[datetime]) -> list[Interval]:
    if len(edges) < 2:
        return []
    usual = usual_interval_s(samples, edges[0], edges[-1])
    per_register = {r: segments(samples, r) for r in REGISTERS}
    out = []
    for start, end in itertools.pairwise(edges):
        inside = [s for s in samples if start <= s.time < end]
        energy, reset, estimated = _energy(per_register, samples, start, end, usual)
        if not inside and all(v is None for v in energy.values()):
            continue
        averages, low, high = _stats(inside)
        out.append(
            Interval(
                start=start,
                end=end,
                samples=len(inside),
                energy=energy,
                energy_reset=reset,
                energy_estimated=estimated,
                expected_samples=_seconds(end - start) / usual if usual else None,
                averages=averages,
                minimum=low,
                maximum=high,
            )
        )
    return out


def hourly(samples: Sequence[Sample], start: datetime, end: datetime) -> list[Interval]:
    """The hours that start in [start, end) and have samples or known energy."""
    first, last = ceil_hour(start), floor_hour(end - timedelta(microseconds=1)) + HOUR
    edges = []
    moment = first
    while moment <= last:
        edges.append(moment)
        moment += HOUR
    return _intervals(samples, edges)


def local_midnight(day: date, timezone: str) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def daily(samples: Sequence[Sample], first: date, end: date, timezone: str) -> list[Interval]:
    """The local days first..end-1 (whole-hour UTC offsets: averages are over the day's samples,
    which is what the SQL's sample-weighted hourly averages give when every sample carries them)."""
    days = [first + timedelta(days=i) for i in range((end - first).days + 1)]
    return _intervals(samples, [local_midnight(d, timezone) for d in days])


def register_delta(samples: Iterable[Sample], register: str) -> float:
    """The register's reset-adjusted increase from its first to its last sample."""
    return sum(seg.step for seg in segments(list(samples), register))


def from_rows(rows: Iterable[tuple[Any, ...]], columns: Sequence[str]) -> list[Sample]:
    """Samples from rows of (time, *columns) read from fleet.power_measurements."""
    return [Sample(r[0], dict(zip(columns, r[1:], strict=True))) for r in rows]


def energy_between(
    samples: Sequence[Sample], register: str, start: datetime, end: datetime
) -> float | None:
    """The register's increase in [start, end) (the rule above), None when nothing is known there."""
    energy, _, _ = _energy({register: segments(samples, register)}, samples, start, end, None)
    return energy[register]


def demand_intervals(
    first: date, end: date, timezone: str, minutes: int
) -> list[tuple[date, datetime, datetime]]:
    """(local day, start, end) of every fixed interval of the local days first..end-1: from each
    local midnight every `minutes`, the last one ending at the next midnight."""
    out = []
    day = first
    while day < end:
        start, stop = (
            local_midnight(day, timezone),
            local_midnight(day + timedelta(days=1), timezone),
        )
        moment = start
        while moment < stop:
            out.append((day, moment, min(moment + timedelta(minutes=minutes), stop)))
            moment += timedelta(minutes=minutes)
        day += timedelta(days=1)
    return out


def demands(
    devices: Sequence[Sequence[Sample]], first: date, end: date, timezone: str, minutes: int
) -> list[tuple[date, datetime, float | None]]:
    """(local day, interval start, demand in kW) of every interval, by brute force: the devices'
    import energy in the interval summed (None when no device's is known), over its length."""
    out = []
    per_device = [
        (samples, {"energy_imp_kwh": segments(samples, "energy_imp_kwh")}) for samples in devices
    ]
    for day, start, stop in demand_intervals(first, end, timezone, minutes):
        known = [
            e
            for samples, segs in per_device
            if (e := _energy(segs, samples, start, stop, None)[0]["energy_imp_kwh"]) is not None
        ]
        out.append((day, start, sum(known) / ((stop - start) / HOUR) if known else None))
    return out
