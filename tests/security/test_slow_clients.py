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


def test_slowloris_and_slow_bodies_do_not_starve_normal_requests(
    server: ThreadedIngestd, customer_token: str
) -> None:
    """With 150 connections dripping headers and 30 dripping bodies, every slow body gets a
    408 within a few seconds, and normal pushes keep answering 200 in well under a second."""
    port = server.port
    body = encode([site(1)])
    head = (
        f"POST {INGEST_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Customer-Token: {customer_token}\r\n"
        "X-Batch-Type: sites\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        "Content-Length: 100000\r\n\r\n"
    ).encode()
    loris = [_open(port, b"POST " + INGEST_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n")
             for _ in range(SLOWLORIS)]  # fmt: skip
    bodies = [_open(port, head + body[:10]) for _ in range(SLOW_BODIES)]
    stop = threading.Event()

    def drip() -> None:
        for _ in range(20):  # bounded: 20 rounds of one header byte per connection
            if stop.wait(0.25):
                return
            for sock in loris:
                with contextlib.suppress(OSError):
                    sock.send(b"X")

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    latencies = []
    try:
        for _ in range(15):
            started = time.monotonic()
            status, _ = server.post(customer_token, "sites", [site(1)])
            latencies.append(time.monotonic() - started)
            assert status == 200
            time.sleep(0.1)
        answers = []
        for sock in bodies:
            sock.settimeout(5)
            try:
                answers.append(sock.recv(64).split(b" ")[1])
            except (OSError, IndexError):
                answers.append(b"none")
    finally:
        stop.set()
        dripper.join(timeout=10)
        for sock in loris + bodies:
            sock.close()
    FIGURES.bad_inputs += SLOWLORIS + SLOW_BODIES
    FIGURES.fault("slowloris", SLOWLORIS)
    FIGURES.fault("slow_body", SLOW_BODIES)
    print(f"normal push latency under attack: max {max(latencies) * 1000:.0f} ms")
    assert answers == [b"408"] * SLOW_BODIES
    assert max(latencies) < 1.0, latencies
