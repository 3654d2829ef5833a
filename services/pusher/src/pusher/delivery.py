"""Sending one batch to ingestd and reading its answer as the protocol defines it.

A 2xx comes back as a `Delivered`; every other outcome is raised as a `DeliveryError` subclass
(see `errors.py`) so the daemon decides what to do from the type alone. Bodies are gzip'd in a
worker thread (zlib releases the GIL), so compressing the next batch overlaps the network wait
for the current one.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from fleetcore.protocol import (
    BATCH_TYPE_HEADER,
    CURSOR_HEADER,
    MAX_CURSOR_LENGTH,
    TOKEN_HEADER,
)

from pusher.backoff import parse_retry_after
from pusher.errors import (
    PayloadTooLarge,
    PermanentDeliveryError,
    RetryLater,
    TransientDeliveryError,
)

__all__ = ["Delivered", "IngestClient", "gzip_body"]

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_MAX_ERROR_BODY = 2048


def gzip_body(body: bytes, level: int) -> bytes:
    """gzip with no timestamp/name header, so equal bodies compress to equal bytes."""
    comp = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
    return comp.compress(body) + comp.flush()


class _Answer(msgspec.Struct):
    batch_type: str = ""
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = msgspec.field(default_factory=list)


_ANSWER = msgspec.json.Decoder(_Answer)


@dataclass(frozen=True, slots=True)
class Delivered:
    """ingestd's 200 answer: rows accepted, already there, and refused (kept in its dead-letter)."""

    status: int
    accepted: int
    duplicates: int
    rejected: int
    errors: list[dict[str, Any]] = field(default_factory=list)


def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Certificate verification is always on; a CA bundle only changes which roots are trusted."""
    return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)


def _error_detail(status: int, text: str) -> str:
    try:
        decoded = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return f"HTTP {status}: {text[:200]!r}" if text else f"HTTP {status}"
    if isinstance(decoded, dict):
        code = decoded.get("error", "")
        detail = decoded.get("detail", "")
        return f"HTTP {status} {code}: {detail}".rstrip(": ")
    return f"HTTP {status}"


class IngestClient:
    """One HTTP session to ingestd for the daemon's lifetime (keep-alive, TLS verified)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float,
        ca_bundle: Path | None = None,
        gzip_level: int = 1,
    ) -> None:
        self.url = url
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._ca_bundle = ca_bundle
        self.gzip_level = gzip_level
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> IngestClient:
        connector = aiohttp.TCPConnector(ssl=_ssl_context(self._ca_bundle), limit=4)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers={"User-Agent": "fleet-pusher/0.1"}
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def compress(self, body: bytes) -> bytes:
        return await asyncio.to_thread(gzip_body, body, self.gzip_level)

    async def send(self, batch_type: str, gzipped: bytes, cursor: str | None) -> Delivered:
        """POST one gzip'd batch; return the 2xx answer or raise the matching DeliveryError."""
        if self._session is None:
            raise RuntimeError("IngestClient used outside `async with`")
        headers = {
            TOKEN_HEADER: self._token,
            BATCH_TYPE_HEADER: batch_type,
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        }
        if cursor:
            headers[CURSOR_HEADER] = cursor[:MAX_CURSOR_LENGTH]
        try:
            async with self._session.post(
                self.url, data=gzipped, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                text = await resp.text(errors="replace") if status != 200 else ""
                raw = await resp.read() if status == 200 else b""
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError:
            raise TransientDeliveryError(
                "no answer within the request timeout", transport="timeout"
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise PermanentDeliveryError(f"TLS error: {exc}", transport="tls") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientDeliveryError(
                f"connection error: {type(exc).__name__}: {exc}", transport="connection"
            ) from None
        return _classify(status, raw, text[:_MAX_ERROR_BODY], retry_after)


def _classify(status: int, raw: bytes, text: str, retry_after: str | None) -> Delivered:
    if 200 <= status < 300:
        try:
            answer = _ANSWER.decode(raw) if raw else _Answer()
        except (msgspec.DecodeError, msgspec.ValidationError):
            answer = _Answer()  # accepted all the same: the server said 2xx
        return Delivered(status, answer.accepted, answer.duplicates, answer.rejected, answer.errors)
    detail = _error_detail(status, text)
    if status == 413:
        max_bytes = None
        try:
            decoded = msgspec.json.decode(text) if text else None
            if isinstance(decoded, dict) and isinstance(decoded.get("max_bytes"), int):
                max_bytes = decoded["max_bytes"]
        except msgspec.DecodeError:
            pass
        raise PayloadTooLarge(detail, max_bytes=max_bytes)
    if status in (429, 503):
        raise RetryLater(detail, status=status, retry_after_s=parse_retry_after(retry_after))
    if status >= 500 or status == 408:
        raise TransientDeliveryError(detail, status=status)
    raise PermanentDeliveryError(detail, status=status)
