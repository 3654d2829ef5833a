"""A reconciliation pass's own digests (`HourlyDigests`): any cell's digest is the sum of its
buckets, and a long horizon costs arrays, not a Python object per device-hour."""

from __future__ import annotations

import random
import tracemalloc
from datetime import UTC, datetime

import pytest
from fleetcore.reconcile import CellDigest
from pusher.reconcile.cells import HOUR, Cell, HourlyDigests

START = datetime(2026, 9, 1, tzinfo=UTC)


def test_a_cells_digest_is_the_sum_of_its_buckets() -> None:
    """Device cells, all-device cells and hours without rows add up as the buckets do (the
    hash modulo 2**64), with the same bucket added twice summed."""
    rng = random.Random(7)
    devices, hours = [3, 8, 21], 50
    digests = HourlyDigests(devices, START, hours)
    buckets: dict[tuple[int, datetime], CellDigest] = {}
    for _ in range(120):
        key = (rng.choice(devices), START + rng.randrange(hours) * HOUR)
        digest = CellDigest(rng.randrange(1, 60), rng.randrange(2**64))
        digests.add(*key, digest)
        buckets[key] = buckets.get(key, CellDigest(0, 0)) + digest
    for cell in [Cell(START, hours), Cell(START + 24 * HOUR, 24), Cell(START + 5 * HOUR, 1, 8)]:
        expected = CellDigest(0, 0)
        for (device, hour), digest in buckets.items():
            if cell.start <= hour < cell.end and cell.device in (None, device):
                expected = expected + digest
        assert digests.of(cell) == expected
    assert digests.get(99, START) == CellDigest(0, 0)
    assert digests.of(Cell(START + hours * HOUR, 3)) == CellDigest(0, 0)
    with pytest.raises(ValueError, match="outside the pass"):
        digests.add(3, START - HOUR, CellDigest(1, 1))


def test_a_90_day_horizon_holds_arrays_not_objects() -> None:
    """27 meters x 90 days of buckets (58,320) take about 16 bytes each, not the ~370 of a dict
    of Python objects (~22 MiB, every pass)."""
    devices, hours = list(range(1, 28)), 90 * 24
    tracemalloc.start()
    try:
        digests = HourlyDigests(devices, START, hours)
        for device in devices:
            for n in range(hours):
                digests.add(device, START + n * HOUR, CellDigest(60, device * 7919 + n))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digests.of(Cell(START, hours)).count == 60 * len(devices) * hours
    assert held < 2 * 2**20
