"""The rows of the benchmarks: plausible meter samples, generated once before any clock starts.

Rows are tuples in the column order ingestd uses for COPY (`time, device_id, received_at,
<24 values>`), turned into protocol items and gzip JSON bodies (the pusher's encoding: msgspec,
then gzip level 1).
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from fleetcore import MEASUREMENT_VALUE_FIELDS

__all__ = [
    "COPY_COLUMNS",
    "COPY_TYPES",
    "MeasurementTuple",
    "chunks",
    "encode_batch",
    "generate_measurements",
    "measurement_items",
]

COPY_COLUMNS: tuple[str, ...] = (
    "time",
    "device_id",
    "received_at",
    *MEASUREMENT_VALUE_FIELDS,
    "customer_id",
)
COPY_TYPES: tuple[str, ...] = (
    "timestamptz",
    "int8",
    "timestamptz",
    *("float8",) * len(MEASUREMENT_VALUE_FIELDS),
    "int8",
)
_ITEM_FIELDS: tuple[str, ...] = ("time", "device_id", "received_at", *MEASUREMENT_VALUE_FIELDS)

# (time, device_id, received_at, v1 … thd_i): one sample, without the customer.
MeasurementTuple = tuple[Any, ...]


def generate_measurements(
    count: int,
    *,
    devices: int = 20,
    start: datetime | None = None,
    interval: timedelta = timedelta(minutes=1),
    seed: int = 1,
) -> list[MeasurementTuple]:
    """`count` plausible three-phase samples, one per device per interval, in time order.

    Keys (time, device_id) are distinct. Values carry the decimals a real meter reports
    (230.4 V, 12.37 A, 0.982 pf, cumulative energy registers), so JSON text, gzip ratio and
    float parsing cost look like production rather than like `1.0` repeated.
    """
    if count < 0 or devices < 1:
        raise ValueError("count must be >= 0 and devices >= 1")
    rng = random.Random(seed)
    base = (start or datetime.now(UTC) - timedelta(days=30)).replace(second=0, microsecond=0)
    load = [rng.uniform(5.0, 180.0) for _ in range(devices)]
    energy = [rng.uniform(1_000.0, 900_000.0) for _ in range(devices)]
    energy_exp = [rng.uniform(0.0, 5_000.0) for _ in range(devices)]
    q_imp = [rng.uniform(100.0, 90_000.0) for _ in range(devices)]
    rows: list[MeasurementTuple] = []
    rnd = rng.random
    for i in range(count):
        d = i % devices
        when = base + interval * (i // devices)
        v1, v2, v3 = (round(228.0 + 5.0 * rnd(), 1) for _ in range(3))
        i1, i2, i3 = (round(load[d] * (0.9 + 0.2 * rnd()), 2) for _ in range(3))
        pf = round(0.85 + 0.14 * rnd(), 3)
        p1, p2, p3 = (round(v * a * pf / 1000.0, 3) for v, a in ((v1, i1), (v2, i2), (v3, i3)))
        p_total = round(p1 + p2 + p3, 3)
        s_total = round(p_total / pf, 3)
        q_total = round((max(s_total**2 - p_total**2, 0.0)) ** 0.5, 3)
        energy[d] += p_total / 60.0
        q_imp[d] += q_total / 60.0
        rows.append(
            (
                when,
                d + 1,
                when + timedelta(milliseconds=1000 + int(3000 * rnd())),
                v1,
                v2,
                v3,
                round(v1 * 1.732 + rnd(), 1),
                round(v2 * 1.732 + rnd(), 1),
                round(v3 * 1.732 + rnd(), 1),
                i1,
                i2,
                i3,
                round(abs(i1 - i2) + rnd(), 2),
                p1,
                p2,
                p3,
                p_total,
                q_total,
                s_total,
                pf,
                round(49.95 + 0.1 * rnd(), 3),
                round(energy[d], 1),
                round(energy_exp[d], 1),
                round(q_imp[d], 1),
                round(rnd() * 2.0, 1),
                round(1.0 + 3.0 * rnd(), 2),
                round(3.0 + 12.0 * rnd(), 2),
            )
        )
    return rows


def measurement_items(rows: Sequence[MeasurementTuple]) -> list[dict[str, Any]]:
    """Protocol items (`{"device_id": …, "time": …, "v1": …}`) of the same samples."""
    return [dict(zip(_ITEM_FIELDS, row, strict=True)) for row in rows]


def encode_batch(items: Sequence[Any], level: int = 1) -> bytes:
    """The pusher's JSON body: `{"items": [...]}` as msgspec JSON, gzip (level 1 by default)."""
    return gzip.compress(msgspec.json.encode({"items": items}), level)


def chunks(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]
