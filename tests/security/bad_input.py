"""Generators of bad input for ingestd, and a plain HTTP client that can send anything.

The client always has a timeout: a hung connection fails the test instead of hanging it.
"""

from __future__ import annotations

import gzip
import json
import math
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from ingestd.app import INGEST_PATH

from tests.chaos.figures import FIGURES

__all__ = ["Answer", "bad_value", "mutated_row", "post_raw"]

REQUEST_TIMEOUT_S = 15.0
FIELDS = {
    "sites": ["id", "name", "timezone", "address", "updated_at"],
    "devices": ["id", "site_id", "serial_number", "model", "name", "updated_at"],
    "measurements": [
        "device_id", "time", "received_at", "v1", "v2", "v3", "v12", "v23", "v31",
        "i1", "i2", "i3", "i_n", "p1", "p2", "p3", "p_total", "q_total", "s_total",
        "pf_total", "freq", "energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh",
        "energy_q_exp_kvarh", "thd_v", "thd_i",
    ],
}  # fmt: skip


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def post_raw(
    base_url: str,
    token: str | None,
    batch_type: str,
    body: bytes,
    *,
    gzip_body: bool = True,
    headers: dict[str, str] | None = None,
    count: bool = True,
) -> Answer:
    """POST `body` as it is (gzip'd unless told otherwise); count it as a bad input tried."""
    all_headers = {"Content-Type": "application/json", "X-Batch-Type": batch_type}
    if token is not None:
        all_headers["X-Customer-Token"] = token
    if gzip_body:
        all_headers["Content-Encoding"] = "gzip"
        body = gzip.compress(body, 1)
    all_headers.update(headers or {})
    request = urllib.request.Request(  # noqa: S310 - loopback URL of the test's own server
        base_url + INGEST_PATH, data=body, method="POST", headers=all_headers
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as resp:  # noqa: S310
            answer = Answer(resp.status, json.loads(resp.read()), dict(resp.headers))
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        answer = Answer(exc.code, parsed, dict(exc.headers))
    if count:
        FIGURES.bad_inputs += 1
        if answer.status >= 500:
            FIGURES.bad_input_5xx += 1
            FIGURES.notes.append(f"5xx: {batch_type} -> {answer.status} {str(answer.body)[:120]}")
    return answer


_HUGE_INTS = st.sampled_from([2**63, 2**63 - 1, 2**64, -1, -(2**63), -(2**63) - 1, 10**30, 10**400])
_FLOATS = st.sampled_from(
    [1e308, -1e308, 1e15, 1e15 + 1, -1e16, 5e-324, -0.0, math.inf, -math.inf, math.nan]
)
_TEXTS = st.one_of(
    st.text(max_size=30),
    st.text(min_size=1, max_size=10).map(lambda s: s + "\x00" + s),
    st.integers(min_value=101, max_value=20_000).map(lambda n: "x" * n),
    st.sampled_from(["", " ", "\ud800", "\udfff", "é" * 300, "2026-13-45T99:99:99Z"]),
)
_TIMES = st.sampled_from(
    [
        "2026-11-26T10:15:00",  # no offset
        "2026-11-26",
        "yesterday",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2999-01-01T00:00:00+00:00",
        "1970-01-01T00:00:00Z",
        "2026-11-26T10:15:00+25:00",
        "2026-02-30T00:00:00Z",
        "",
    ]
)
_WRONG_TYPES = st.one_of(
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)

bad_value = st.one_of(_WRONG_TYPES, _HUGE_INTS, _FLOATS, _TEXTS, _TIMES, st.integers(), st.floats())


@st.composite
def mutated_row(draw: st.DrawFn, batch_type: str, valid: dict[str, Any]) -> dict[str, Any]:
    """`valid` with one to three of its fields broken: a bad value, the field missing, or
    an unexpected extra field."""
    row = dict(valid)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        field = draw(st.sampled_from(FIELDS[batch_type]))
        action = draw(st.sampled_from(["bad", "bad", "bad", "missing", "extra"]))
        if action == "missing":
            row.pop(field, None)
        elif action == "extra":
            row[draw(st.text(min_size=1, max_size=20))] = draw(bad_value)
        else:
            row[field] = draw(bad_value)
    return row
