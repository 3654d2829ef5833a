"""The memory a JSON body is budgeted before it is parsed (`ingestd.memory.parsed_bytes`) covers
what parsing it really allocates, for the shapes that cost the most per body byte."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fleetcore import BatchType, ValidationWindow, parse_batch, parse_measurement_columns
from ingestd.memory import parsed_bytes

from tests.samples import NOW, device, iso, measurement

WINDOW = ValidationWindow(NOW, timedelta(days=365), timedelta(days=1))
ROWS = 50_000


def _keys_only(n: int) -> dict[str, Any]:
    return {
        "device_id": n % 50 + 1,
        "time": iso(NOW - timedelta(seconds=n)),
        "received_at": iso(NOW),
    }


def _full(n: int) -> dict[str, Any]:
    return measurement(n % 50 + 1, NOW - timedelta(seconds=n))


def _some_refused(n: int) -> dict[str, Any]:
    row = _keys_only(n)
    if n % 100 == 0:  # 500 refused rows (the limit is 1,000): the batch is looked at row by row
        row["v1"] = "not a number"
    return row


def _peak(parse: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        parse()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("shape", [_keys_only, _full, _some_refused])
def test_measurement_bodies_stay_inside_their_budget(
    shape: Callable[[int], dict[str, Any]],
) -> None:
    """Keys-only, full and partly refused measurement rows: the parse's peak allocation stays
    under what the body was budgeted."""
    body = json.dumps({"items": [shape(n) for n in range(ROWS)]}).encode()
    peak = _peak(lambda: parse_measurement_columns(body, WINDOW))
    budget = parsed_bytes(len(body), columnar=False)
    assert peak <= budget, f"{peak / len(body):.1f} bytes per body byte, budget {budget}"


def test_device_bodies_stay_inside_their_budget() -> None:
    """A devices batch (rows parsed one by one into objects): inside its budget too."""
    body = json.dumps({"items": [device(n + 1, 1) for n in range(ROWS)]}).encode()
    peak = _peak(lambda: parse_batch(body, BatchType.DEVICES, WINDOW))
    assert peak <= parsed_bytes(len(body), columnar=False)
