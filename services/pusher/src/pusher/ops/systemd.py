"""Telling systemd how the daemon is doing, when it runs as a `Type=notify` unit.

systemd passes `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket) and, with
`WatchdogSec=`, `$WATCHDOG_USEC`. The sd_notify protocol is one datagram per message, lines
of `KEY=VALUE`; a dozen lines of socket code, so no dependency. Notification is advisory:
a failed send is logged once and never stops the daemon.

The watchdog is pinged from the push loop itself (between batches and while it idles), so a
loop stuck anywhere stops the pings and systemd restarts the service. WatchdogSec must
therefore exceed the longest step the loop can take: PUSHER_REQUEST_TIMEOUT_S plus a batch read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Mapping

import structlog

__all__ = ["SystemdNotifier"]

log = structlog.get_logger("pusher")


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, waking early when the stop event is set."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class SystemdNotifier:
    """Sends sd_notify messages; every method is a no-op when not run under systemd."""

    def __init__(self, address: str | None, watchdog_s: float | None = None) -> None:
        self.address = address
        self.watchdog_interval_s = watchdog_s / 2 if watchdog_s else None
        self._next_ping = 0.0
        self._sock: socket.socket | None = None
        self._warned = False
        self._last_status: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SystemdNotifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID as systemd sets them."""
        address = env.get("NOTIFY_SOCKET") or None
        watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog_s = int(usec) / 1_000_000
        return cls(address, watchdog_s)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> None:
        if self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), target)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("systemd_notify_failed", socket=self.address, error=str(exc))

    def ready(self, status: str) -> None:
        self._last_status = status
        self.notify("READY=1", f"STATUS={status}")
        self._next_ping = 0.0
        self.ping()

    def status(self, text: str) -> None:
        """STATUS=, sent only when the text changed."""
        if text != self._last_status:
            self._last_status = text
            self.notify(f"STATUS={text}")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping")

    def ping(self) -> None:
        """WATCHDOG=1 when half the watchdog interval has passed since the last one."""
        if self.watchdog_interval_s is None:
            return
        now = time.monotonic()
        if now >= self._next_ping:
            self.notify("WATCHDOG=1")
            self._next_ping = now + self.watchdog_interval_s

    def next_ping_at(self) -> float:
        """When the loop must be awake again to ping (infinity without a watchdog)."""
        return self._next_ping if self.watchdog_interval_s is not None else float("inf")

    async def idle(self, stop: asyncio.Event, until: float) -> None:
        """Sleep until `until` (monotonic) or the stop event, waking to ping the watchdog on
        time: the loop's idle time never starves systemd."""
        while True:
            self.ping()
            now = time.monotonic()
            if now >= until or stop.is_set():
                await asyncio.sleep(0)
                return
            await _sleep(stop, min(until, self.next_ping_at()) - now)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
