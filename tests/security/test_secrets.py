"""Secrets never leave: the push token, the admin token and the database password appear in
no log line of ingestd or the pusher (run as real processes), no error body and no metric."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.stack import ChaosStack

ADMIN_TOKEN = "secret-admin-token-do-not-leak-0123456789abcdef"
PASSWORD = "Pw-d0-n0t-l3ak-7781"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ChaosStack]:
    """A chaos stack whose database URLs carry a password (trust auth ignores it)."""
    with ChaosStack.create(tmp_path) as chaos:
        chaos.central_dsn = chaos.central_dsn.replace("fleet@", f"fleet:{PASSWORD}@")
        chaos.customer_dsn = chaos.customer_dsn.replace("fleet@", f"fleet:{PASSWORD}@")
        yield chaos


def _get(url: str, headers: dict[str, str]) -> str:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return str(resp.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())


def test_no_secret_in_logs_error_bodies_or_metrics(stack: ChaosStack) -> None:
    """After pushes, refused tokens, a refused admin token, a customer database outage and a
    SIGTERM, neither daemon's output, nor any error body, nor /metrics contains a secret."""
    stack.start_ingestd(INGESTD_ADMIN_TOKEN=ADMIN_TOKEN)
    stack.start_writers(threads=1)
    pusher = stack.start_pusher()
    time.sleep(2.0)
    bodies = [
        _get(
            stack.ingestd_url + "/api/fleet/customers", {"Authorization": f"Bearer {stack.token}"}
        ),
        _get(
            stack.ingestd_url + "/api/fleet/customers", {"Authorization": f"Bearer {ADMIN_TOKEN}x"}
        ),
        _get(stack.ingestd_url + "/api/fleet/customers", {"X-Customer-Token": ADMIN_TOKEN}),
        _get(stack.ingestd_url + "/metrics", {}),
    ]
    stack.customer.stop("immediate")
    # Until the pusher has met the outage (bounded): a loaded machine may need more than a tick.
    deadline = time.monotonic() + 20.0
    while "customer_database_unavailable" not in pusher.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    stack.customer.start()
    time.sleep(1.5)
    bodies.append(_get(stack.ingestd_url + "/metrics", {}))
    assert pusher.stop() == 0
    assert stack.ingestd is not None and stack.ingestd.stop() == 0
    outputs = {"ingestd": stack.ingestd.output(), "pusher": pusher.output()}
    assert "batch_delivered" in outputs["pusher"], "the pusher did push"
    assert "customer_database_unavailable" in outputs["pusher"], "the outage was logged"
    secrets = {
        "push token": stack.token,
        "push token body": stack.token[4:24],
        "admin token": ADMIN_TOKEN,
        "admin token body": ADMIN_TOKEN[7:30],
        "password": PASSWORD,
    }
    for where, text in [*outputs.items(), *(("answer", b) for b in bodies)]:
        for name, secret in secrets.items():
            assert secret not in text, f"{name} appears in {where}"
