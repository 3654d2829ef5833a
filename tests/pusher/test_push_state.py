"""The push state: the daemon's in-memory copy and the stored row change together."""

from __future__ import annotations

from datetime import UTC, datetime

from fleetcore import PushCursor
from fleetcore.protocol import BatchType
from pusher import source
from pusher.state import PushState, count_quarantined, load_states

from tests.fix_customer import BASE_TIME


async def test_every_change_leaves_memory_equal_to_the_stored_row(customer_db: str) -> None:
    """After each kind of outcome (failure, 413 shrink, delivery, quarantine, cursor reset) the
    state the daemon reads is exactly what a fresh read of the database returns."""
    measurements = BatchType.MEASUREMENTS
    async with await source.connect(customer_db) as conn:
        state = PushState()
        await state.load(conn, 500)

        async def assert_stored() -> None:
            assert state[measurements] == (await load_states(conn))[measurements]

        await assert_stored()
        await state.failed(
            conn, measurements, batch_size=500, delay_s=1.5, status=503, error="HTTP 503"
        )
        await assert_stored()
        assert state[measurements].consecutive_failures == 1
        await state.failed(
            conn,
            measurements,
            batch_size=250,
            delay_s=0.0,
            status=413,
            error="HTTP 413",
            counts_as_failure=False,
        )
        await assert_stored()
        assert (state[measurements].batch_size, state[measurements].consecutive_failures) == (
            250,
            1,
        )
        shipped_to = PushCursor(1234, 7, BASE_TIME)
        await state.succeeded(
            conn,
            measurements,
            cursor=shipped_to,
            batch_size=313,
            status=200,
            rows=40,
            newest_received_at=BASE_TIME,
        )
        await assert_stored()
        assert state[measurements].cursor == shipped_to
        assert (state[measurements].shipped_rows, state[measurements].consecutive_failures) == (
            40,
            0,
        )
        refused = PushCursor(1300, 8, datetime(2026, 1, 1, 0, 0, 1, 500, tzinfo=UTC))
        await state.quarantine(conn, row_cursor=refused, payload='{"v1":1}', reason="too large")
        await assert_stored()
        assert (state[measurements].cursor, state[measurements].batch_size) == (refused, 1)
        assert await count_quarantined(conn) == 1
        await state.reset_cursor(conn, measurements, PushCursor.start())
        await assert_stored()
        assert state[measurements].cursor == PushCursor.start()


async def test_load_caps_the_batch_size_at_the_setting(customer_db: str) -> None:
    """A smaller PUSHER_BATCH_SIZE applies at once to the loaded state."""
    async with await source.connect(customer_db) as conn:
        state = PushState()
        await state.load(conn, 500)
        await state.load(conn, 100)
        assert {s.batch_size for _, s in state.items()} == {100}
