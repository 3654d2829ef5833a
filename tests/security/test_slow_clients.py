"""Slow-client attacks: slowloris (headers dripped over many connections) and slow bodies
(408 after INGESTD_BODY_TIMEOUT_S) do not stop ingestd serving normal requests promptly."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from ingestd.app import INGEST_PATH
from ingestd.settings import Settings

from tests.chaos.figures import FIGURES
from tests.fix_ingestd import ThreadedIngestd
from tests.samples import encode, site

SLOWLORIS = 150
SLOW_BODIES = 30


@pytest.fixture
def server(ingestd_settings: Settings) -> Iterator[ThreadedIngestd]:
    """ingestd giving bodies 1 s to arrive."""
    threaded = ThreadedIngestd(replace(ingestd_settings, body_timeout_s=1.0))
    threaded.start()
    try:
        yield threaded
    finally:
        threaded.stop()


def _open(port: int, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(first)
    return sock


def _attack(
    server: ThreadedIngestd, token: str, *, loris: int, slow_bodies: int, attacker: str = ""
) -> tuple[list[int], list[float], list[bytes]]:
    """Open `loris` connections dripping headers and `slow_bodies` dripping a body (with the
    `attacker`'s token: another gateway), push 15 normal batches meanwhile; return their
    statuses and latencies, and the slow bodies' statuses."""
    port = server.port
    body = encode([site(1)])
    head = (
        f"POST {INGEST_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Customer-Token: {attacker or token}\r\n"
        "X-Batch-Type: sites\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        "Content-Length: 100000\r\n\r\n"
    ).encode()
    dripping = [_open(port, b"POST " + INGEST_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n")
                for _ in range(loris)]  # fmt: skip
    bodies = [_open(port, head + body[:10]) for _ in range(slow_bodies)]
    stop = threading.Event()

    def drip() -> None:
        for _ in range(20):  # bounded: 20 rounds of one header byte per connection
            if stop.wait(0.25):
                return
            for sock in dripping:
                with contextlib.suppress(OSError):
                    sock.send(b"X")

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    statuses, latencies, answers = [], [], []
    try:
        time.sleep(0.2)
        for _ in range(15):
            started = time.monotonic()
            status, _ = server.post(token, "sites", [site(1)])
            latencies.append(time.monotonic() - started)
            statuses.append(status)
            time.sleep(0.1)
        for sock in bodies:
            sock.settimeout(5)
            try:
                answers.append(sock.recv(64).split(b" ")[1])
            except (OSError, IndexError):
                answers.append(b"none")
    finally:
        stop.set()
        dripper.join(timeout=10)
        for sock in dripping + bodies:
            sock.close()
    FIGURES.bad_inputs += loris + slow_bodies
    FIGURES.fault("slowloris", loris)
    FIGURES.fault("slow_body", slow_bodies)
    print(f"normal push under attack: statuses {set(statuses)}, max {max(latencies) * 1000:.0f} ms")
    return statuses, latencies, answers


def test_slowloris_does_not_starve_normal_requests(
    server: ThreadedIngestd, customer_token: str
) -> None:
    """With 150 connections dripping their headers, normal pushes keep answering 200 in well
    under a second."""
    statuses, latencies, _ = _attack(server, customer_token, loris=SLOWLORIS, slow_bodies=0)
    assert set(statuses) == {200}
    assert max(latencies) < 1.0, latencies


def test_slow_bodies_time_out_with_408(
    server: ThreadedIngestd, customer_token: str, other_token: str
) -> None:
    """Every body dripped slower than INGESTD_BODY_TIMEOUT_S is answered: 408 once read for
    that long, 429 past the gateway's INGESTD_MAX_INFLIGHT_PER_CUSTOMER requests in progress, or
    503 when shed unread past INGESTD_MAX_INFLIGHT — no connection hangs."""
    _, _, answers = _attack(
        server, customer_token, loris=0, slow_bodies=SLOW_BODIES, attacker=other_token
    )
    assert set(answers) <= {b"408", b"429", b"503"}, answers
    assert b"408" in answers


def test_slow_bodies_do_not_starve_normal_requests(
    server: ThreadedIngestd, customer_token: str, other_token: str
) -> None:
    """With 30 connections of another gateway dripping bodies, normal pushes keep answering
    200 in well under a second."""
    statuses, latencies, _ = _attack(
        server, customer_token, loris=0, slow_bodies=SLOW_BODIES, attacker=other_token
    )
    assert set(statuses) == {200}, statuses
    assert max(latencies) < 1.0, latencies
