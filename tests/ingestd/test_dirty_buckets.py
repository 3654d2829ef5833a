"""The hourly buckets a measurement batch marks dirty: every (device, hour) of its samples older
than the horizon, ascending, the same whether counted with a set (a few hundred rows) or numpy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
from fleetcore import ValidationWindow, parse_measurement_columns
from hypothesis import given, settings
from hypothesis import strategies as st
from ingestd.storage import state
from ingestd.storage.state import touched_buckets

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WINDOW = ValidationWindow(NOW, timedelta(days=3650), timedelta(days=1))
HOUR_US = 3600 * 1_000_000


def _batch(samples: list[tuple[int, int]]) -> object:
    """A parsed batch of (device id, minutes before NOW) samples."""
    items = [
        {"time": (NOW - timedelta(minutes=m)).isoformat(), "device_id": d,
         "received_at": NOW.isoformat(), "v1": 1.5}
        for d, m in samples
    ]  # fmt: skip
    return parse_measurement_columns(msgspec.json.encode({"items": items}), WINDOW)


def _exact(samples: list[tuple[int, int]], before: datetime | None) -> set[tuple[int, int]]:
    out = set()
    for device, minutes in samples:
        when = NOW - timedelta(minutes=minutes)
        if before is None or when < before:
            out.add((device, int(when.timestamp()) // 3600))
    return out


samples_st = st.lists(
    st.tuples(st.integers(1, 40), st.integers(0, 60 * 24 * 30)), min_size=1, max_size=80
)
befores = st.one_of(
    st.none(), st.integers(0, 60 * 24 * 31).map(lambda m: NOW - timedelta(minutes=m))
)


@settings(max_examples=150, deadline=None)
@given(samples_st, befores, st.booleans())
def test_marks_cover_every_older_sample_in_order_whichever_way_they_are_counted(
    samples: list[tuple[int, int]], before: datetime | None, with_numpy: bool
) -> None:
    """Every (device, hour) of a sample older than the horizon is marked, ascending, and the
    marks are exactly those unless the batch is a small grid (whose other cells are harmless)."""
    batch = _batch(samples)
    old = state._SET_ROWS
    state._SET_ROWS = 0 if with_numpy else old  # the numpy way on the same small batch
    try:
        devices, hours = touched_buckets(batch, before)  # type: ignore[arg-type]
    finally:
        state._SET_ROWS = old
    marks = list(zip(devices, hours, strict=True))
    assert marks == sorted(set(marks))
    exact = _exact(samples, before)
    assert exact <= set(marks)
    if before is not None and any(NOW - timedelta(minutes=m) >= before for _, m in samples):
        assert set(marks) == exact  # a batch reaching past the horizon gets its exact buckets
    if set(marks) != exact:  # the grid of its devices x hours, when that is small
        grid_devices = {d for d, _ in exact}
        assert {d for d, _ in marks} == grid_devices
        assert len(marks) <= state._SUPERSET_LIMIT


def test_a_batch_all_before_the_horizon_marks_its_small_grid() -> None:
    """A batch whose samples are all older than the horizon counts as one without a horizon: its
    devices x hours, not a per-row count."""
    samples = [(d, m) for d in (3, 1, 2) for m in (200, 100)]
    batch = _batch(samples)
    marks = touched_buckets(batch, NOW)  # type: ignore[arg-type]
    assert marks == touched_buckets(batch, None)  # type: ignore[arg-type]
    first = int((NOW - timedelta(minutes=200)).timestamp()) // 3600
    last = int((NOW - timedelta(minutes=100)).timestamp()) // 3600
    hours = list(range(first, last + 1))
    assert marks == ([d for d in (1, 2, 3) for _ in hours], hours * 3)
    assert np.asarray(marks).dtype.kind == "i"
