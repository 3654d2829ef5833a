"""Hypothesis strategies for answers no ingestd gives (see tests/fix_faults.py), grouped by what
they attack: the status line, Retry-After, Content-Type, the body, the transport.

Every generated answer is foreign: a 2xx never carries counts that add up to the rows sent with
the right batch type, and a 413 never carries the protocol's own body, so after each one the
pusher must send the same rows again (its cursor kept) and must not quarantine anything.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

from tests.fix_faults import Answer, Counts

__all__ = ["answers", "retry_after_values"]

_REASONS = {200: b"OK", 413: b"Payload Too Large", 429: b"Too Many", 503: b"Unavailable"}

# Values that are not delta-seconds a server can mean: unicode digits (str.isdigit() is true for
# them, int() is not), absurd sizes, signs, fractions, and HTTP-dates far off.
retry_after_values = st.one_of(
    st.sampled_from(
        [
            "²",
            "①",
            "٣",
            "\uff11\uff12",  # fullwidth 12
            "9" * 400,
            "9" * 5000,
            "-1",
            "-999999999999",
            "+5",
            "1.5",
            "1e9",
            "0x10",
            "NaN",
            "inf",
            " ",
            "Fri, 31 Dec 99999999999999999999 23:59:59 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Mon, 01 Jan 0001 00:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 +9999",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sat, 99 Foo 2026 99:99:99 GMT",
        ]
    ),
    st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=30),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=60),
)

_CHARSETS = [
    "idna",
    "undefined",
    "hex",
    "punycode",
    "utf-8",
    "rot13",
    "base64",
    "zlib",
    "x-foo",
    "",
]
content_types = st.one_of(
    st.sampled_from(["application/json", "text/html", "text/plain", "application/octet-stream"]),
    st.sampled_from(_CHARSETS).map(lambda c: f"application/json; charset={c}"),
    st.sampled_from(_CHARSETS).map(lambda c: f"text/plain; charset={c}"),
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40),
)


def _nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

_count_values = st.one_of(
    st.integers(min_value=-5, max_value=5),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(["x", "1", "", None]),
)

counts_bodies = st.builds(
    Counts,
    accepted=_count_values,
    duplicates=_count_values,
    rejected=_count_values,
    offset=st.integers(1, 3),
    batch_type=st.sampled_from(["measurements", "sites", "devices", "", None, "MEASUREMENTS"]),
    errors_depth=st.sampled_from([0, 0, 0, 1200, 5000]),
)

plain_bodies = st.one_of(
    st.just(b""),
    st.just(b"<html><body>Welcome to nginx!</body></html>"),
    st.just(b"{}"),
    st.just(b"[]"),
    st.just(b"null"),
    st.just(b'{"accepted":"x"}'),
    st.just(b'{"error":"payload_too_large"}'),
    st.just(b'{"error":"nul\\u0000here","detail":"a\\u0000b"}'),
    st.just('{"error":"x","detail":"\x00\u2028\udcff"}'.encode("utf-8", "surrogatepass")),
    st.sampled_from([1200, 5000, 20000]).map(_nested),
    st.sampled_from([1200, 5000]).map(
        lambda d: b'{"error":"x","detail":' + _nested(d) + b"}",
    ),
    st.binary(max_size=300),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(10_000, 300_000).map(lambda n: b"x" * n),
)


def _status_line(code: int) -> bytes:
    return b"HTTP/1.1 %d %s" % (code, _REASONS.get(code, b"X"))


statuses_2xx = st.one_of(
    st.sampled_from([200, 200, 201, 202, 204, 206, 299]), st.integers(200, 299)
)
statuses_other = st.one_of(
    st.sampled_from([301, 302, 303, 307, 308, 400, 401, 403, 404, 408, 413, 429, 500, 502, 503]),
    st.integers(300, 999),
)

garbage_status_lines = st.sampled_from(
    [
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 -200 OK",
        b"HTTP/1.1 OK",
        b"HTTP/2.0 200 OK",
        b"HTTP/1.0 200 OK",
        b"ICY 200 OK",
        b"HTTP/1.1 \xb2\xb2\xb2 OK",
        b"HTTP/1.1 200 \x00",
        b"",
        b"\x16\x03\x01\x00\xa5",
    ]
)

_header_values = st.one_of(
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40).map(
        lambda t: t.encode("latin-1")
    ),
    st.just(b"x" * 70_000),
    st.just(b"\x00"),
    st.just("ü²①".encode()),
)
extra_headers = st.lists(
    st.tuples(
        st.sampled_from(
            [b"Retry-After", b"Location", b"X-Batch-Type", b"Content-Encoding", b"Set-Cookie"]
        ),
        _header_values,
    ),
    max_size=3,
)


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    """One foreign answer to a measurements batch."""
    kind = draw(st.sampled_from(["2xx", "2xx", "status", "retry_after", "413", "garbage"]))
    headers: list[tuple[bytes, bytes]] = [
        (b"Content-Type", draw(content_types).encode("latin-1", "replace"))
    ]
    body: bytes | Counts
    if kind == "2xx":
        code = draw(statuses_2xx)
        status_line = _status_line(code)
        body = draw(st.one_of(counts_bodies, plain_bodies))
    elif kind == "retry_after":
        code = draw(st.sampled_from([429, 503, 500, 301, 200]))
        status_line = _status_line(code)
        headers.append((b"Retry-After", draw(retry_after_values).encode("utf-8", "replace")))
        body = draw(st.one_of(plain_bodies, counts_bodies))
    elif kind == "413":
        code = 413
        status_line = _status_line(code)
        body = draw(plain_bodies)  # never the protocol's own body (with max_bytes)
    elif kind == "garbage":
        code = 0
        status_line = draw(garbage_status_lines)
        body = draw(plain_bodies)
    else:
        code = draw(statuses_other)
        status_line = _status_line(code)
        body = draw(st.one_of(plain_bodies, counts_bodies))
    headers.extend(draw(extra_headers))
    if draw(st.booleans()) and kind == "2xx":
        headers.append((b"Content-Encoding", draw(st.sampled_from([b"gzip", b"deflate", b"br"]))))
    return Answer(
        label=f"{kind}:{code}",
        status_line=status_line,
        headers=tuple(headers),
        body=body,
        interim=draw(st.sampled_from([(), (b"HTTP/1.1 100 Continue",), (b"HTTP/1.1 103 Early",)])),
        content_length=draw(st.booleans()),
        forward_first=draw(st.booleans()),
        cut_at=draw(st.one_of(st.none(), st.none(), st.integers(0, 200))),
        trickle_s=draw(st.sampled_from([0.0, 0.0, 0.0, 0.3, 1.5])),
    )


def _json(code: int, body: bytes | Counts, *headers: tuple[bytes, bytes], label: str) -> Answer:
    return Answer(
        label=label,
        status_line=_status_line(code),
        headers=((b"Content-Type", b"application/json"), *headers),
        body=body,
    )


# The answers an outside review found to stop the pusher or to be taken for a delivery (issue
# 14): each is tried in every run, before the generated ones.
REVIEWED = [
    _json(503, b"{}", (b"Retry-After", "²".encode()), label="retry_after:503"),
    _json(429, b"{}", (b"Retry-After", "①".encode()), label="retry_after:429"),
    _json(503, b"{}", (b"Retry-After", b"9" * 400), label="retry_after:503"),
    _json(503, b"{}", (b"Retry-After", b"9" * 5000), label="retry_after:503"),
    _json(
        503,
        b"{}",
        (b"Retry-After", b"Fri, 31 Dec 99999999999999999999 23:59:59 GMT"),
        label="retry_after:503",
    ),
    *(
        Answer(
            label="status:500",
            status_line=_status_line(500),
            headers=((b"Content-Type", b"application/json; charset=" + c),),
            body=b'{"error":"x"}',
        )
        for c in (b"idna", b"undefined", b"hex", b"punycode")
    ),
    _json(500, _nested(1200), label="status:500"),
    _json(503, _nested(1200), label="status:503"),
    _json(200, Counts(errors_depth=1200), label="2xx:200"),
    _json(200, Counts(accepted=1, rejected=-1), label="2xx:200"),
    _json(400, b'{"error":"bad\\u0000request","detail":"nul\\u0000"}', label="status:400"),
    _json(204, b"", label="2xx:204"),
    *(
        _json(200, body, label="2xx:200")
        for body in (b"", b"<html>portal</html>", b"{}", b"[]", b'{"accepted":"x"}')
    ),
    _json(200, Counts(accepted=2), label="2xx:200"),
    _json(200, Counts(batch_type="sites"), label="2xx:200"),
    *(_json(code, Counts(), label=f"2xx:{code}") for code in (201, 202, 299)),
    _json(413, b"", label="413:413"),
    _json(413, b"<html>413 Request Entity Too Large</html>", label="413:413"),
]
