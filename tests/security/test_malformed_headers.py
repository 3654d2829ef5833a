"""Generated malformed headers, times and ids at ingestd, sent as raw bytes over a socket: every
one is answered with a 4xx naming it (or the connection is closed), never a 5xx — on the ingest
endpoint and on the read API."""

from __future__ import annotations

import gzip
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from fleetcore.protocol import API_PREFIX, INGEST_PATH
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ingestd.settings import Settings

from tests.chaos.figures import FIGURES
from tests.fix_ingestd import ThreadedIngestd
from tests.long_runs import long_runs_selected
from tests.samples import encode, site

ADMIN = "a" * 40
PROPERTY = settings(
    max_examples=200 if long_runs_selected() else 30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Bytes a header value can carry at all (CR, LF and NUL end or break the header line).
header_bytes = st.binary(max_size=40).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"").strip()
)


@pytest.fixture
def server(ingestd_settings: Settings, customer_token: str) -> Iterator[ThreadedIngestd]:
    """ingestd with the read API on, on a thread of its own."""
    threaded = ThreadedIngestd(replace(ingestd_settings, admin_token=ADMIN))
    threaded.start()
    try:
        yield threaded
    finally:
        threaded.stop()


def _request(
    port: int, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> int | None:
    """Send one request as raw bytes; the answer's status, or None when the server closed the
    connection without one."""
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            answer += chunk
    FIGURES.bad_inputs += 1
    status = int(answer.split(b" ", 2)[1])
    if status >= 500:
        FIGURES.bad_input_5xx += 1
    return status


def _ingest_headers(token: str) -> dict[bytes, bytes]:
    return {
        b"X-Customer-Token": token.encode(),
        b"X-Batch-Type": b"sites",
        b"Content-Type": b"application/json",
        b"Content-Encoding": b"gzip",
    }


INGEST_HEADERS = [b"X-Batch-Type", b"X-Push-Cursor", b"X-Push-Repair", b"X-Customer-Token",
                  b"Content-Type", b"Content-Encoding", b"X-Forwarded-For", b"Content-Length"]  # fmt: skip


@PROPERTY
@given(name=st.sampled_from(INGEST_HEADERS), value=header_bytes)
@example(name=b"X-Batch-Type", value=b"sites\xff\xfe")
@example(name=b"X-Push-Cursor", value=b"\xff\xfe")
@example(name=b"X-Push-Cursor", value=b"caf\xc3\xa9")
@example(name=b"X-Customer-Token", value=b"flt_\xff")
def test_any_ingest_header_bytes_are_never_a_5xx(
    server: ThreadedIngestd, customer_token: str, name: bytes, value: bytes
) -> None:
    """Whatever bytes one header of a push carries, the answer is not a 5xx."""
    headers = _ingest_headers(customer_token)
    headers[name] = value
    status = _request(
        server.port,
        b"POST",
        INGEST_PATH.encode(),
        list(headers.items()),
        gzip.compress(encode([site(1)], gzip=False)),
    )
    assert status is None or status < 500


def _read(server: ThreadedIngestd, path: str, authorization: bytes | None = None) -> int | None:
    auth = b"Bearer " + ADMIN.encode() if authorization is None else authorization
    return _request(server.port, b"GET", path.encode(), [(b"Authorization", auth)])


@PROPERTY
@given(value=header_bytes)
@example(value=b"Bearer \xff\xfe")
@example(value=b"Bearer \xed\xa0\x80")
def test_any_authorization_bytes_are_401_not_500(server: ThreadedIngestd, value: bytes) -> None:
    """An Authorization header of any bytes is a 401 on the read API (a 400 from the HTTP parser
    for control characters), never a 500."""
    status = _read(server, f"{API_PREFIX}/customers", value)
    assert status is not None and 400 <= status < 500


DIGITS = st.text(alphabet=st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=6)


@PROPERTY
@given(
    device=(DIGITS | st.text(min_size=1, max_size=6)).filter(
        lambda t: t not in (".", "..") and not (t.isascii() and t.isdigit())
    )
)
@example(device="²")
@example(device="١٢")
@example(device="9" * 30)
def test_device_ids_in_any_digit_class_are_4xx(server: ThreadedIngestd, device: str) -> None:
    """A device id of Unicode digits other than ASCII (², Arabic-Indic, Roman numerals) or of
    any text is a 400 or 404, never a 500."""
    for kind in ("hourly", "daily"):
        path = f"{API_PREFIX}/customers/DEV0001/devices/{quote(device, safe='')}/{kind}"
        status = _read(server, path)
        assert status is not None and 400 <= status < 500, (device, status)


EDGE_TIMES = [
    "0001-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "0001-01-01T00:00:00-23:59",
    "9999-12-31T23:59:59.999999Z", "9999-12-31T23:30:00-01:00", "9999-12-31T23:59:59+23:59",
    "2016-12-31T23:59:60Z", "2026-02-30T00:00:00Z", "2026-01-01T24:00:00Z", "0000-01-01T00:00:00Z",
    "2026-01-01T00:00:00+24:00", "2026-01-01", "+2026-01-01T00:00:00Z", "2026-01-01T00:00:00\udcff",
]  # fmt: skip
aware_times = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
).flatmap(
    lambda moment: st.integers(-1439, 1439).map(
        lambda minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat()
    )
)


@PROPERTY
@given(
    start=st.sampled_from(EDGE_TIMES) | aware_times, end=st.sampled_from(EDGE_TIMES) | aware_times
)
def test_times_at_every_edge_are_4xx_or_answered(
    server: ThreadedIngestd, start: str, end: str
) -> None:
    """Read-API times at the edges of every type (year 1 with offsets, year 9999, leap seconds,
    impossible dates) are answered or refused with a 4xx, never a 500."""
    query = f"from={quote(start, safe='', errors='surrogateescape')}&to={quote(end, safe='', errors='surrogateescape')}"
    for path in ("devices/1/hourly", "completeness"):
        status = _read(server, f"{API_PREFIX}/customers/DEV0001/{path}?{query}")
        assert status is not None and status < 500
    day = quote(start[:10], safe="", errors="surrogateescape")
    status = _read(server, f"{API_PREFIX}/customers/DEV0001/devices/1/daily?from={day}&to={day}")
    assert status is not None and status < 500


@PROPERTY
@given(code=st.binary(min_size=1, max_size=12))
def test_customer_codes_of_any_bytes_are_4xx(server: ThreadedIngestd, code: bytes) -> None:
    """A customer code of any bytes (percent-encoded, UTF-8 or not) is a 404 or 400."""
    status = _read(server, f"{API_PREFIX}/customers/{quote(code, safe='')}/devices")
    assert status is not None and 400 <= status < 500


def test_a_site_time_utc_cannot_hold_is_a_refused_row(
    server: ThreadedIngestd, customer_token: str
) -> None:
    """A full set with one updated_at of 0001-01-01T00:30:00+01:00 is a 200 with that row
    refused (it was a 500, and the pusher re-sent the set forever)."""
    status, answer = server.post(
        customer_token, "sites", [site(1), site(2, updated_at="0001-01-01T00:30:00+01:00")]
    )
    assert status == 200 and answer["rejected"] == 1
    assert datetime.now(UTC).year > 1
