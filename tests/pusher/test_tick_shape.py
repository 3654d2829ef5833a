"""A pusher tick reads as one orchestrating function: its collaborators never call back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pusher
from pusher.daemon import Pusher
from pusher.ops.systemd import SystemdNotifier
from pusher.settings import Settings

from tests.call_shape import CallShape
from tests.fix_customer import seed_inventory, seed_measurements


class _OneTick(SystemdNotifier):
    """Traces from READY (the session is set up) to the first idle (the tick is over), then
    stops the daemon."""

    def __init__(self, shape: CallShape, stop: asyncio.Event) -> None:
        super().__init__(None)
        self.shape = shape
        self.stop = stop

    def ready(self, status: str) -> None:
        super().ready(status)
        self.shape.__enter__()

    async def idle(self, stop: asyncio.Event, until: float) -> None:
        self.shape.__exit__()
        self.stop.set()


async def test_one_tick_has_no_call_backs(pusher_settings: Settings) -> None:
    """One tick that ships the sites, the devices and a measurements batch to a real ingestd
    enters no module that is already on its calling stack (figures printed with -s)."""
    seed_inventory(pusher_settings.database_url)
    seed_measurements(pusher_settings.database_url, stop=100)
    stop = asyncio.Event()
    shape = CallShape(Path(pusher.__file__).parent, "pusher")
    daemon = Pusher(pusher_settings, notifier=_OneTick(shape, stop))
    await asyncio.wait_for(daemon.loop(stop), 60)
    figures = {
        "tick": shape.summary(),
        "tick_without_accessors": shape.summary(accessors=False),
        "edges": shape.edges(accessors=False),
    }
    print(json.dumps(figures))
    assert daemon.metrics.value("fleet_pusher_rows_shipped_total", resource="measurements") == 400
    assert shape.callbacks == []
