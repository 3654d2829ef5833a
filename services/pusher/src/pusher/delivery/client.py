"""Sending one batch to ingestd and reading its answer as the protocol defines it.

What the answer means is read by `answers.classify` (ingestd's answer to this batch, or not):
a delivery comes back as ingestd's `IngestAnswer`; every other outcome is raised as a
`DeliveryError` subclass (see `pusher.errors`) so the daemon decides what to do from the type
alone. Whatever the network does (resets, truncated or malformed answers, odd encodings), `send`
raises nothing but a `DeliveryError`. Every answer to a batch is told to the format negotiation
(`wire.Negotiation`); bodies are encoded by `wire.encode`.

The wire is kept lean for metered links: one kept-alive connection for the daemon's life, only
the headers the protocol needs (no Accept or Accept-Encoding; the User-Agent only with the full
sets), measurement batches in
the columnar encoding once ingestd's answers list it (`Accept-Post`, `Accept-Encoding`: the
negotiation of docs/PROTOCOL.md; PUSHER_WIRE_FORMAT=json keeps gzip JSON), and every request
paced by the upload cap when one is set (`uploadcap`).
"""

from __future__ import annotations

import asyncio
import functools
import platform
import ssl
import time
from collections.abc import Mapping
from pathlib import Path

import h11
import msgspec
from fleetcore import zstd_compress
from fleetcore.answers import IngestAnswer
from fleetcore.protocol import (
    BATCH_TYPE_HEADER,
    CURSOR_HEADER,
    DATABASE_IDENTITY_HEADER,
    HEALTH_HEADER,
    HEALTH_PATH,
    HEALTH_VERSION,
    INGEST_PATH,
    MAX_CURSOR_LENGTH,
    RECONCILE_PATH,
    REPAIR_HEADER,
    TOKEN_HEADER,
    WireFormat,
)
from fleetcore.reconcile import DigestAnswer, DigestRequest

from pusher.delivery.answers import MAX_ANSWER_BYTES, classify, classify_digests, printable
from pusher.delivery.http11 import Answer, ConnectionFailed, HttpConnection, TlsFailed
from pusher.delivery.uploadcap import UploadCap
from pusher.delivery.wire import Negotiation, WireBody, gzip_body
from pusher.errors import PermanentDeliveryError, TransientDeliveryError
from pusher.retry import parse_http_date
from pusher.versions import dist_version, pusher_version

__all__ = ["IngestClient", "user_agent"]


@functools.cache
def user_agent() -> str:
    """What ingestd's access logs and proxies see: this release, and the runtime under it. Sent
    with the full sets (at least every PUSHER_FULL_SET_INTERVAL_S), not with every measurement
    batch: on a metered link it would be ~60 bytes a minute for nothing the protocol needs.
    Versions read without importlib.metadata (`pusher.versions`)."""
    return f"fleet-pusher/{pusher_version()} h11/{dist_version('h11')} python/{platform.python_version()}"


def _server_offset_s(headers: Mapping[str, str], sent: float, received: float) -> float | None:
    """Server clock minus ours from an answer's `Date` (whole seconds: its middle, +0.5 s,
    against the middle of the round trip); None without a readable Date."""
    server = parse_http_date(headers.get("Date", ""))
    if server is None:
        return None
    return round(server.timestamp() + 0.5 - (sent + received) / 2, 1)


def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Certificate verification is always on; a CA bundle only changes which roots are trusted."""
    return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)


class IngestClient:
    """One HTTP/1.1 connection to ingestd, kept alive for the daemon's lifetime (`http11`), TLS
    verified; every request bounded by `timeout_s` as a whole (connecting included).

    `negotiation` says which format measurement batches go in (`wire.Negotiation`, told every
    answer to a batch); `format` is its current choice. `identity` is the central database's identity as the latest
    answer named it (`X-Database-Identity`), None until an answer carried one."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float,
        ca_bundle: Path | None = None,
        gzip_level: int = 1,
        wire_format: str = "auto",
        upload_cap: UploadCap | None = None,
    ) -> None:
        self.url = url
        self._token = token
        self._timeout_s = timeout_s
        self._ca_bundle = ca_bundle
        self.gzip_level = gzip_level
        self.negotiation = Negotiation(wire_format)
        self.upload_cap = upload_cap
        self.sent_bytes = 0
        self.health_advertised: bool | None = None  # None: no answer of ingestd seen yet
        self.clock_offset_s: float | None = None
        self.last_request_at = time.monotonic()
        self.received_bytes = 0
        self.identity: str | None = None
        self._http: HttpConnection | None = None

    async def __aenter__(self) -> IngestClient:
        https = self.url.lower().startswith("https:")
        self._http = HttpConnection(self.url, _ssl_context(self._ca_bundle) if https else None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    @property
    def format(self) -> WireFormat:
        """The format the next measurement batch goes in."""
        return self.negotiation.format

    async def send(
        self,
        batch_type: str,
        wire: WireBody,
        cursor: str | None,
        *,
        rows: int,
        repair: bool = False,
    ) -> IngestAnswer:
        """POST one batch of `rows` rows; return ingestd's answer to it or raise the matching
        DeliveryError. `repair` marks measurements re-sent by reconciliation
        (`X-Push-Repair: 1`)."""
        headers = {
            TOKEN_HEADER: self._token,
            BATCH_TYPE_HEADER: batch_type,
            "Content-Type": wire.format.value,
        }
        if batch_type != "measurements":
            headers["User-Agent"] = user_agent()
        if wire.encoding:
            headers["Content-Encoding"] = wire.encoding
        if cursor:
            headers[CURSOR_HEADER] = cursor[:MAX_CURSOR_LENGTH]
        if repair:
            headers[REPAIR_HEADER] = "1"
        status, retry_after, raw = await self._post(self.url, wire, headers)
        if status == 415:
            self.negotiation.refused(wire.format)
        return classify(status, raw, retry_after, batch_type=batch_type, rows=rows)

    async def digests(self, request: DigestRequest) -> DigestAnswer:
        """POST a digest request (gzip JSON) to the reconcile endpoint; return ingestd's answer
        or raise the matching DeliveryError."""
        gzipped = await asyncio.to_thread(gzip_body, msgspec.json.encode(request), self.gzip_level)
        body = WireBody(gzipped)
        headers = {TOKEN_HEADER: self._token, "Content-Type": WireFormat.JSON.value}
        if body.encoding:
            headers["Content-Encoding"] = body.encoding
        status, retry_after, raw = await self._post(self.reconcile_url, body, headers)
        return classify_digests(status, raw, retry_after, cells=len(request.cells))

    @property
    def reconcile_url(self) -> str:
        base = self.url[: -len(INGEST_PATH)] if self.url.endswith(INGEST_PATH) else self.url
        return base + RECONCILE_PATH

    async def _post(
        self, url: str, wire: WireBody, headers: dict[str, str]
    ) -> tuple[int, str | None, bytes]:
        """One request within the upload cap: (status, Retry-After, the body read bounded); the
        answer's negotiation and database identity are noted."""
        await self._pace(wire.data, headers)
        sent = time.time()
        try:
            answer = await self._request(url, wire.data, headers)
        except TimeoutError:
            raise TransientDeliveryError(
                "no answer within the request timeout", transport="timeout"
            ) from None
        except TlsFailed as exc:
            raise PermanentDeliveryError(f"TLS error: {exc}", transport="tls") from None
        except ConnectionFailed as exc:
            raise TransientDeliveryError(
                f"connection error: {printable(str(exc))}", transport="connection"
            ) from None
        if url == self.url:
            self.negotiation.answered(answer.headers)
        self._observe(answer.headers, sent)
        self.received_bytes += len(answer.body) + answer.head_bytes
        return answer.status, answer.headers.get("Retry-After"), answer.body

    async def _request(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST `body` to `url` (on ingestd's origin) within the request timeout."""
        if self._http is None:
            raise RuntimeError("IngestClient used outside `async with`")
        target = url[url.index("/", url.index("//") + 2) :] if url.count("/") > 2 else "/"
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._http.request("POST", target, headers, body, MAX_ANSWER_BYTES)
        except h11.LocalProtocolError as exc:  # a header value HTTP cannot carry
            raise ConnectionFailed(f"request not sendable: {exc}") from None

    async def _pace(self, data: bytes, headers: Mapping[str, str]) -> None:
        size = len(data) + sum(len(k) + len(v) + 4 for k, v in headers.items())
        if self.upload_cap is not None:
            await self.upload_cap.take(size)
        self.sent_bytes += size
        self.last_request_at = time.monotonic()

    def _observe(self, headers: Mapping[str, str], sent: float) -> None:
        """What every answer tells besides its status: reports taken, the server's clock, which
        central database answered."""
        self.health_advertised = headers.get(HEALTH_HEADER) == HEALTH_VERSION
        identity = headers.get(DATABASE_IDENTITY_HEADER)
        if identity:
            self.identity = printable(identity, 100)
        offset = _server_offset_s(headers, sent, time.time())
        if offset is not None:
            self.clock_offset_s = offset

    async def send_report(self, body: bytes) -> int | None:
        """POST a health report (JSON, zstd'd when smaller); the answer's status, or None when
        none came. Never raises for what the network or the server does."""
        packed = zstd_compress(body)
        headers = {TOKEN_HEADER: self._token, "Content-Type": WireFormat.JSON.value}
        if len(packed) < len(body):
            body = packed
            headers["Content-Encoding"] = "zstd"
        await self._pace(body, headers)
        url = self.url.removesuffix(INGEST_PATH) + HEALTH_PATH
        sent = time.time()
        try:
            answer = await self._request(url, body, headers)
        except (TimeoutError, ConnectionFailed):
            return None
        self._observe(answer.headers, sent)
        return answer.status
