"""One kept-alive HTTP/1.1 connection to ingestd: asyncio streams carry the bytes, h11 speaks
the protocol.

The pusher sends one request at a time to one server, so it needs a single connection, not a
client session with a pool, cookies, redirects, proxies or a resolver of its own: aiohttp's
client cost a gateway ~10 MiB of RSS and ~0.15 s of start-up for that. h11 (python-hyper's
sans-I/O HTTP/1.1, pure Python, a few hundred KiB) parses what comes back, strictly and
bounded, so no HTTP parser of our own meets the hostile answers of tests/chaos.

What a request guarantees:

- the connection is kept alive between requests while both sides allow it (h11's states say
  so); one the server closed while idle, or one left in an unknown state (an error, a timeout, a
  cancellation, an answer not read to its end), is closed and the next request opens a new one;
- TLS is verified with the given context (`ssl.create_default_context`, the CA bundle
  configured); a failed handshake or certificate raises `TlsFailed`, every other failure to get
  an answer `ConnectionFailed` (an answer lost mid-flight included: the caller retries);
- interim 1xx answers are skipped; the body is read up to `max_body` bytes (the rest is not
  read: the connection is dropped); an answer in a content coding other than gzip or deflate
  (none is asked for) is `ConnectionFailed`;
- no timeout of its own: the caller bounds the whole request (`asyncio.timeout`).
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

__all__ = ["Answer", "AnswerHeaders", "ConnectionFailed", "HttpConnection", "TlsFailed"]

_READ_CHUNK = 64 * 1024
# h11's bound on a status line and headers (its default is 16 KiB): a longer head is an error.
_MAX_HEAD = 64 * 1024


class ConnectionFailed(Exception):
    """No (whole) answer: refused, reset, closed mid-answer, or bytes that are not HTTP/1.1."""


class TlsFailed(ConnectionFailed):
    """The TLS handshake failed: a certificate that cannot be verified, or no TLS at all."""


class AnswerHeaders(Mapping[str, str]):
    """An answer's headers: names looked up case-insensitively, the first of a repeated name."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._first: dict[str, str] = {}
        for name, value in raw:
            # As aiohttp did: UTF-8, undecodable bytes kept as surrogates (printable() strips them).
            self._first.setdefault(
                name.decode("latin-1").lower(), value.decode("utf-8", "surrogateescape")
            )

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer: its status, headers, body (bounded) and the bytes its head took on the wire."""

    status: int
    headers: AnswerHeaders
    body: bytes
    head_bytes: int


class HttpConnection:
    """Requests to the origin of `url` (http or https), one at a time, over one connection."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default = 443 if parts.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = name if self.port == default else f"{name}:{self.port}"
        self._ssl = ssl_context if parts.scheme == "https" else None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._h11: h11.Connection | None = None

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes, max_body: int
    ) -> Answer:
        """Send one request and read its answer; raises ConnectionFailed (TlsFailed) when no
        whole answer came. Any exception, cancellation included, leaves the connection closed."""
        try:
            return await self._exchange(method, target, headers, body, max_body)
        except BaseException:
            self.close()
            raise

    async def _exchange(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes, max_body: int
    ) -> Answer:
        reader, writer, conn = await self._connection()
        head = [("Host", self.authority), *headers.items(), ("Content-Length", str(len(body)))]
        try:
            # The whole request goes to the transport's buffer and the answer is read while it
            # drains: an answer given before the body was read (a 413 at once) is still seen.
            writer.write(conn.send(h11.Request(method=method, target=target, headers=head)) or b"")
            if body:
                writer.writelines(conn.send_with_data_passthrough(h11.Data(data=body)) or [])
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            answer, whole = await _read_answer(reader, conn, max_body)
        except h11.ProtocolError as exc:
            raise ConnectionFailed(f"not an HTTP/1.1 answer: {exc}") from None
        except (OSError, EOFError) as exc:
            raise ConnectionFailed(f"{type(exc).__name__}: {exc}") from None
        if whole and conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            self.close()
        return answer

    async def _connection(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection]:
        """The kept-alive connection, or a new one when there is none or the server closed it."""
        if self._writer is not None and (self._writer.is_closing() or self._reader_done()):
            self.close()
        if self._reader is None or self._writer is None or self._h11 is None:
            try:
                self._reader, self._writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                    happy_eyeballs_delay=0.25,
                    limit=_READ_CHUNK,
                )
            except ssl.SSLError as exc:
                raise TlsFailed(str(exc)) from None
            except OSError as exc:
                raise ConnectionFailed(f"{type(exc).__name__}: {exc}") from None
            self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        return self._reader, self._writer, self._h11

    def _reader_done(self) -> bool:
        return self._reader is not None and self._reader.at_eof()

    def close(self) -> None:
        """Drop the connection (the next request opens a new one)."""
        if self._writer is not None:
            self._writer.transport.abort()
        self._reader = self._writer = self._h11 = None


async def _read_answer(
    reader: asyncio.StreamReader, conn: h11.Connection, max_body: int
) -> tuple[Answer, bool]:
    """The answer (interim 1xx skipped) and whether it was read to its end."""
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(_READ_CHUNK))
        elif isinstance(event, h11.InformationalResponse):
            continue
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) >= max_body:
                break
        elif isinstance(event, h11.EndOfMessage):
            break
        else:  # ConnectionClosed (or PAUSED, which a client never sees) before the answer's end
            raise ConnectionFailed("the connection closed before the answer was complete")
    assert response is not None  # h11 yields Data and EndOfMessage only after the Response
    headers = AnswerHeaders(list(response.headers))
    head_bytes = sum(len(k) + len(v) + 4 for k, v in response.headers)
    whole = isinstance(event, h11.EndOfMessage)
    data = _decoded(bytes(body[:max_body]), headers.get("content-encoding", ""), max_body)
    return Answer(response.status_code, headers, data, head_bytes), whole


def _decoded(body: bytes, coding: str, max_body: int) -> bytes:
    """The body in the content coding the server chose (none was asked for), up to max_body."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise ConnectionFailed(f"an answer in a content coding not asked for: {coding[:40]!r}")
    wbits = 16 + zlib.MAX_WBITS if "gzip" in coding else zlib.MAX_WBITS
    try:
        return zlib.decompressobj(wbits).decompress(body, max_body)
    except zlib.error as exc:
        raise ConnectionFailed(f"an answer's {coding} body cannot be read: {exc}") from None
