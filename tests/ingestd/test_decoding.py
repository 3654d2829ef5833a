"""Where a received body is decoded: a small clean measurement batch on the event loop, any other
in the decoding pool — with the same answer either way."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fleetcore import BatchType, ValidationWindow, columns_from_rows, encode_columns, zstd_compress
from ingestd.body import BodyFormat
from ingestd.decoding import (
    INLINE_BODY_BYTES,
    INLINE_ROWS,
    Decoded,
    DecodeLimits,
    WireBody,
    decode,
)
from ingestd.errors import PayloadTooLarge
from ingestd.memory import BodyMemory, MemoryBudget

from tests.samples import encode, measurement, measurements

WINDOW = ValidationWindow(datetime.now(UTC), timedelta(days=3650), timedelta(days=1))
JSON = BodyFormat(False, "gzip")
COLUMNAR = BodyFormat(True, "zstd")


class CountingPool(ThreadPoolExecutor):
    """A real decoding pool that counts the bodies handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def _decode(
    body: bytes, body_format: BodyFormat, max_body_bytes: int = 64 << 20
) -> tuple[Decoded, int]:
    async def run() -> tuple[Decoded, int]:
        with CountingPool() as pool:
            limits = DecodeLimits(max_body_bytes, time.monotonic() + 60, 60, 1)
            memory = BodyMemory(MemoryBudget(256 << 20), 1)
            try:
                decoded = await decode(
                    pool,
                    WireBody(bytearray(body)),
                    body_format,
                    BatchType.MEASUREMENTS,
                    WINDOW,
                    limits,
                    memory,
                )
            finally:
                memory.release()
            return decoded, pool.submitted

    return asyncio.run(run())


def _columnar(items: list[dict[str, Any]]) -> bytes:
    rows = [
        {
            **i,
            "time": datetime.fromisoformat(i["time"]),
            "received_at": datetime.fromisoformat(i["received_at"]),
        }
        for i in items
    ]
    return zstd_compress(encode_columns(columns_from_rows(rows)))


def test_a_gateway_minute_is_decoded_on_the_event_loop() -> None:
    """27 valid rows, gzip JSON or columnar: decoded without the pool, all rows taken."""
    items = measurements(27)
    for body, body_format in ((encode(items), JSON), (_columnar(items), COLUMNAR)):
        decoded, pooled = _decode(body, body_format)
        assert pooled == 0
        assert decoded.parsed.valid.rows == 27 and not decoded.parsed.rejections


def test_a_small_json_batch_with_a_refused_row_goes_to_the_pool() -> None:
    """Finding which rows are refused and why is left to the pool; the answer names the row."""
    items = measurements(5)
    items[3]["v1"] = 1e16
    decoded, pooled = _decode(encode(items), JSON)
    assert pooled == 1
    assert [r.index for r in decoded.parsed.rejections] == [3]
    assert decoded.parsed.valid.rows == 4


def test_small_columnar_refusals_are_found_inline_up_to_the_row_bound() -> None:
    """A columnar batch of at most INLINE_ROWS rows is decoded inline, refusals included; one
    row more goes to the pool; both say which rows are refused."""
    when = datetime.now(UTC) - timedelta(hours=1)
    for rows, expected_pooled in ((INLINE_ROWS, 0), (INLINE_ROWS + 1, 1)):
        items = [measurement(i, when) for i in range(rows)]
        items[1]["v1"] = 1e16
        decoded, pooled = _decode(_columnar(items), COLUMNAR)
        assert pooled == expected_pooled
        assert [r.index for r in decoded.parsed.rejections] == [1]


def test_a_body_that_inflates_past_the_inline_bound_goes_to_the_pool() -> None:
    """A small gzip body that inflates past INLINE_BODY_BYTES is decoded by the pool (whose
    limits, not the inline bound, decide its answer)."""
    items = measurements(200)
    body = encode(items)
    assert len(gzip.decompress(body)) > INLINE_BODY_BYTES
    decoded, pooled = _decode(body, JSON)
    assert pooled == 1 and decoded.parsed.valid.rows == 200


def test_a_configured_body_limit_below_the_inline_bound_still_holds() -> None:
    """With INGESTD_MAX_BODY_BYTES under the inline bound, a body past it is refused with that
    limit, as before."""
    body = encode(measurements(27))
    limit = len(gzip.decompress(body)) - 1
    with pytest.raises(PayloadTooLarge) as refused:
        _decode(body, JSON, max_body_bytes=limit)
    assert refused.value.status == 413 and str(limit) in (refused.value.detail or "")
