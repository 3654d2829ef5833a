"""Sending one batch to ingestd and reading its answer as the protocol defines it.

What the answer means is read by `answers.classify` (ingestd's answer to this batch, or not):
a delivery comes back as a `Delivered`; every other outcome is raised as a `DeliveryError`
subclass (see `errors.py`) so the daemon decides what to do from the type alone. Whatever the
network does (resets, truncated or malformed answers, odd encodings), `send` raises nothing
but a `DeliveryError`. Bodies are gzip'd in a
worker thread (zlib releases the GIL), so compressing the next batch overlaps the network wait
for the current one.
"""

from __future__ import annotations

import asyncio
import platform
import ssl
import zlib
from importlib.metadata import version
from pathlib import Path

import aiohttp
from fleetcore.protocol import (
    BATCH_TYPE_HEADER,
    CURSOR_HEADER,
    MAX_CURSOR_LENGTH,
    TOKEN_HEADER,
)

from pusher.answers import MAX_ANSWER_BYTES, Delivered, classify, printable
from pusher.errors import PermanentDeliveryError, TransientDeliveryError

__all__ = ["USER_AGENT", "Delivered", "IngestClient", "gzip_body"]

# What ingestd's access logs and proxies see: this release, and the runtime under it.
USER_AGENT = (
    f"fleet-pusher/{version('pusher')} aiohttp/{aiohttp.__version__} "
    f"python/{platform.python_version()}"
)

_GZIP_WBITS = 16 + zlib.MAX_WBITS


def gzip_body(body: bytes, level: int) -> bytes:
    """gzip with no timestamp/name header, so equal bodies compress to equal bytes."""
    comp = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
    return comp.compress(body) + comp.flush()


def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Certificate verification is always on; a CA bundle only changes which roots are trusted."""
    return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)


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
            connector=connector, timeout=self._timeout, headers={"User-Agent": USER_AGENT}
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def compress(self, body: bytes) -> bytes:
        return await asyncio.to_thread(gzip_body, body, self.gzip_level)

    async def send(
        self, batch_type: str, gzipped: bytes, cursor: str | None, *, rows: int
    ) -> Delivered:
        """POST one gzip'd batch of `rows` rows; return ingestd's answer to it or raise the
        matching DeliveryError."""
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
                retry_after = resp.headers.get("Retry-After")
                raw = await _read_bounded(resp)
        except TimeoutError:
            raise TransientDeliveryError(
                "no answer within the request timeout", transport="timeout"
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise PermanentDeliveryError(f"TLS error: {exc}", transport="tls") from None
        except (aiohttp.ClientError, OSError, ValueError, LookupError) as exc:
            # ValueError/LookupError: a malformed answer aiohttp could not parse or decode.
            raise TransientDeliveryError(
                f"connection error: {type(exc).__name__}: {printable(str(exc))}",
                transport="connection",
            ) from None
        return classify(status, raw, retry_after, batch_type=batch_type, rows=rows)


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    """The body up to MAX_ANSWER_BYTES (the rest is not read: the connection is dropped)."""
    body = bytearray()
    async for chunk in resp.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) >= MAX_ANSWER_BYTES:
            resp.close()
            break
    return bytes(body[:MAX_ANSWER_BYTES])
