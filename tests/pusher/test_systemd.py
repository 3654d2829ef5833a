"""What `pusher run` tells systemd through $NOTIFY_SOCKET (sd_notify), read from a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from pusher.ops.systemd import SystemdNotifier
from pusher.settings import Settings

from tests.fix_customer import seed_measurements
from tests.fix_faults import FaultFront
from tests.fix_ingestd import central_count
from tests.fix_pg import wait_for
from tests.fix_pusher import running_pusher

WATCHDOG_USEC = 400_000  # pings every 0.2 s


@dataclass
class NotifySocket:
    """A bound AF_UNIX datagram socket standing in for systemd, with what it received."""

    address: str
    sock: socket.socket
    messages: list[tuple[float, list[str]]] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [line for _, lines in self.messages for line in lines]

    def times_of(self, line: str) -> list[float]:
        return [at for at, lines in self.messages if line in lines]

    async def collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.messages.append((time.monotonic(), data.decode().split("\n")))


@contextlib.asynccontextmanager
async def listening(notify: NotifySocket) -> AsyncIterator[NotifySocket]:
    task = asyncio.create_task(notify.collect())
    try:
        yield notify
    finally:
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _notifier() -> SystemdNotifier:
    """What `pusher run` hands the daemon: the notifier read from the environment at start."""
    return SystemdNotifier.from_env(os.environ)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NotifySocket]:
    """$NOTIFY_SOCKET and $WATCHDOG_USEC as systemd sets them, on a filesystem path or an
    abstract ('@') address."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify")
        sock.bind(address)
    else:
        address = f"@fleet-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + address[1:])
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield NotifySocket(address, sock)
    finally:
        sock.close()


async def test_ready_status_watchdog_and_stopping(
    notify_socket: NotifySocket,
    pusher_settings: Settings,
    customer_db: str,
    central_db: str,
    fault_front: FaultFront,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`pusher run` sends READY=1 before its first batch, STATUS= lines, WATCHDOG=1 at half of
    WATCHDOG_USEC while it runs (never sooner, never a gap reaching the timeout), and
    STOPPING=1 last."""
    # 2 s, not the 0.4 s of the other tests: a loaded machine stalls this process's loop (the
    # in-process pusher's, the fake ingestd's and the collector's) for a few hundred ms.
    watchdog_s = 2.0
    monkeypatch.setenv("WATCHDOG_USEC", str(int(watchdog_s * 1e6)))
    expected = seed_measurements(customer_db, devices=2, stop=100)
    settings = replace(pusher_settings, ingest_url=fault_front.url, push_interval_s=0.2)
    async with listening(notify_socket) as notify, running_pusher(settings, _notifier()):
        await wait_for(lambda: central_count(central_db) == expected, what="all rows")
        await wait_for(lambda: len(notify.times_of("WATCHDOG=1")) >= 4, what="4 pings")
        stop_asked = time.monotonic()
    lines = notify.lines()
    ready = notify.times_of("READY=1")
    assert len(ready) == 1
    assert ready[0] < fault_front.requests[0].at, "READY before the first batch"
    assert any(line.startswith("STATUS=") and "rows shipped" in line for line in lines)
    pings = [at for at in notify.times_of("WATCHDOG=1") if at < stop_asked]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert len(pings) >= 4
    assert max(gaps) < watchdog_s, "never a gap reaching the watchdog timeout"
    # Received times: each may be late by the loop's stalls, so half of the half interval.
    assert min(gaps) > watchdog_s / 4, "pinged at half the interval, not at every tick"
    assert notify.messages[-1][1][0] == "STOPPING=1"
    assert not any("flt_" in line for line in lines)


@pytest.mark.parametrize("notify_socket", ["path"], indirect=True)
async def test_watchdog_pings_stop_while_the_loop_is_stuck(
    notify_socket: NotifySocket,
    pusher_settings: Settings,
    customer_db: str,
    central_db: str,
    fault_front: FaultFront,
) -> None:
    """The watchdog is pinged from the push loop itself: while the loop waits on an answer
    that does not come, the pings stop (systemd would restart it); they resume after."""
    expected = seed_measurements(customer_db, devices=2, stop=100)
    fault_front.stall_request = 1
    settings = replace(pusher_settings, ingest_url=fault_front.url)
    async with listening(notify_socket) as notify, running_pusher(settings, _notifier()):
        await asyncio.wait_for(fault_front.stalled.wait(), 30)
        stuck_from = time.monotonic()
        await asyncio.sleep(1.0)
        stuck_until = time.monotonic()
        fault_front.release.set()
        await wait_for(lambda: central_count(central_db) == expected, what="all rows")
        await asyncio.sleep(0.5)
    pings = notify.times_of("WATCHDOG=1")
    assert not [at for at in pings if stuck_from < at < stuck_until]
    assert len([at for at in pings if at > stuck_until]) >= 2
