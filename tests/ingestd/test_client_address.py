"""The client address behind proxies: the rightmost X-Forwarded-For hop no trusted proxy
vouches for, so that a client writing the header itself cannot reset its failed-authentication
budget; without trusted proxies the header is ignored."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.client_address import client_address, parse_trusted_proxies
from ingestd.settings import ConfigError, Settings

from tests.samples import encode, site

PROXIES = parse_trusted_proxies("10.0.0.0/8, 127.0.0.1, fd00::/8")


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # not from a proxy: header ignored
        ("10.0.0.2", ["198.51.100.1, 203.0.113.7"], "203.0.113.7"),  # the proxy's entry wins
        ("10.0.0.2", ["198.51.100.1, 203.0.113.7, 10.0.0.9"], "203.0.113.7"),  # two proxies
        ("10.0.0.2", ["198.51.100.1", "203.0.113.7"], "203.0.113.7"),  # two header lines
        ("10.0.0.2", ["garbage, 203.0.113.7"], "203.0.113.7"),
        ("10.0.0.2", ["203.0.113.7:5123"], "203.0.113.7"),
        ("10.0.0.2", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("10.0.0.2", ["10.0.0.7, garbage"], "10.0.0.2"),  # unreadable last hop: the peer
        ("10.0.0.2", ["10.1.1.1, 10.0.0.7"], "10.1.1.1"),  # all trusted: the leftmost
        ("10.0.0.2", [], "10.0.0.2"),
        ("::ffff:10.0.0.2", ["203.0.113.7"], "203.0.113.7"),
        (None, ["203.0.113.7"], "unknown"),
    ],
)
def test_rightmost_untrusted_hop(peer: str | None, headers: list[str], expected: str) -> None:
    """Examples of the walk from the right past trusted proxies."""
    assert client_address(peer, headers, PROXIES) == expected


@given(spoofed=st.lists(st.text(max_size=40), max_size=5))
def test_what_a_client_writes_never_changes_its_address(spoofed: list[str]) -> None:
    """Whatever a client puts in X-Forwarded-For, the address the trusted proxy appends wins."""
    forged = ", ".join(spoofed)
    header = f"{forged}, 203.0.113.7" if forged else "203.0.113.7"
    assert client_address("10.0.0.2", [header], PROXIES) == "203.0.113.7"
    assert client_address("203.0.113.7", [header], PROXIES) == "203.0.113.7"
    assert client_address("203.0.113.7", [header], ()) == "203.0.113.7"


def test_settings_read_trusted_proxies_and_refuse_the_old_switch() -> None:
    """INGESTD_TRUSTED_PROXIES takes CIDRs; a bad one and the old INGESTD_TRUST_FORWARDED_FOR
    fail at start naming the variable; INGESTD_PORT must lie in 1..65535."""
    base = {"INGESTD_DATABASE_URL": "postgresql://x@localhost/db"}
    settings = Settings.from_env({**base, "INGESTD_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.0.2.1/32"]
    with pytest.raises(ConfigError, match="INGESTD_TRUSTED_PROXIES: 'ten' is not"):
        Settings.from_env({**base, "INGESTD_TRUSTED_PROXIES": "ten"})
    with pytest.raises(ConfigError, match="INGESTD_TRUST_FORWARDED_FOR is gone"):
        Settings.from_env({**base, "INGESTD_TRUST_FORWARDED_FOR": "true"})
    for port in ("0", "65536", "99999", "-1"):
        with pytest.raises(ConfigError, match="INGESTD_PORT"):
            Settings.from_env({**base, "INGESTD_PORT": port})
    assert Settings.from_env({**base, "INGESTD_PORT": "65535"}).port == 65535


def _headers(token: str, forwarded: str | None) -> dict[str, str]:
    headers = {
        "X-Customer-Token": token,
        "X-Batch-Type": "sites",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return headers


async def _guesses(client: TestClient[Any, Any], forwarded: list[str | None]) -> list[int]:
    body = encode([site(1)])
    statuses = []
    for n, header in enumerate(forwarded):
        resp = await client.post(
            INGEST_PATH, data=body, headers=_headers(f"flt_guess{n:040d}", header)
        )
        statuses.append(resp.status)
    return statuses  # fmt: skip


@pytest.mark.parametrize("trusted", ["127.0.0.1/32", ""], ids=["behind-a-proxy", "no-proxy"])
async def test_spoofed_forwarded_for_does_not_reset_the_budget(
    aiohttp_client: Any, ingestd_settings: Settings, trusted: str
) -> None:
    """Token guesses from one client, each with a different forged X-Forwarded-For entry, reach
    429 after the budget: behind a trusted proxy (the test client's loopback address) because
    the proxy's own entry names the client, without one because the header is ignored."""
    settings = replace(
        ingestd_settings,
        auth_failures_per_min=1.0,
        auth_failure_burst=3,
        trusted_proxies=parse_trusted_proxies(trusted),
    )
    server = TestServer(create_app(settings))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    forged = [f"198.51.100.{n}, 203.0.113.7" for n in range(8)]
    statuses = await _guesses(client, list[str | None](forged))
    assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429] * 5, statuses
    if trusted:  # another client behind the same proxy has a budget of its own
        assert await _guesses(client, ["203.0.113.8"]) == [401]


def test_ipv6_budgets_are_kept_per_64() -> None:
    """An IPv6 client rotating through its /64 keeps one failed-authentication budget; IPv4
    addresses and other /64s keep their own."""
    from ingestd.client_address import budget_key

    one = budget_key("2001:db8:1:2::1")
    assert one == budget_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert one != budget_key("2001:db8:1:3::1")
    assert budget_key("192.0.2.7") == "192.0.2.7"
    assert budget_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert budget_key("unknown") == "unknown"
