"""Generated bad input at ingestd: never a 5xx, never a hung connection, and the valid rows of
a mixed batch are stored."""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fix_ingestd import ThreadedIngestd
from tests.long_runs import long_runs_selected
from tests.samples import NOW, device, measurement, site
from tests.security.bad_input import mutated_row, post_raw

EXAMPLES = 300 if long_runs_selected() else 40
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_serial = itertools.count(1)


@pytest.fixture
def server(threaded_ingestd: ThreadedIngestd) -> Iterator[ThreadedIngestd]:
    """The test's ingestd on a thread of its own, reached over real HTTP."""
    yield threaded_ingestd


def _valid(batch_type: str, n: int) -> dict[str, Any]:
    """A valid row whose key is new for this test session."""
    if batch_type == "sites":
        return site(n)
    if batch_type == "devices":
        return device(n, site_id=1)
    return measurement(n % 5 + 1, NOW - timedelta(days=2) + timedelta(seconds=n))


def _stored(dsn: str, batch_type: str, rows: list[dict[str, Any]]) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if batch_type == "measurements":
            keys = [(r["device_id"], r["time"]) for r in rows]
            found = conn.execute(
                "SELECT count(*) FROM fleet.power_measurements AS m "
                "JOIN unnest(%s::bigint[], %s::timestamptz[]) AS k(d, t) "
                "ON m.device_id = k.d AND m.time = k.t",
                ([k[0] for k in keys], [k[1] for k in keys]),
            ).fetchone()
        else:
            found = conn.execute(
                f"SELECT count(*) FROM fleet.{batch_type} "
                "WHERE id = ANY(%s::bigint[]) AND deleted_at IS NULL",
                ([r["id"] for r in rows],),
            ).fetchone()
    return int(found[0]) if found else 0


@pytest.mark.parametrize("batch_type", ["sites", "devices", "measurements"])
def test_mutated_rows_never_5xx_and_valid_rows_are_stored(
    server: ThreadedIngestd, customer_token: str, central_db: str, batch_type: str
) -> None:
    """Rows with any field broken (wrong type, huge or tiny number, non-finite, NUL, over-long,
    id outside bigint, missing, extra) get a 4xx or a 200 with per-row rejections, and the valid
    rows of the same batch (one of them sent twice) are stored."""

    @PROPERTY
    @given(data=st.data(), n_valid=st.integers(1, 4), n_bad=st.integers(1, 4))
    def prop(data: st.DataObject, n_valid: int, n_bad: int) -> None:
        valid = [_valid(batch_type, next(_serial)) for _ in range(n_valid)]
        bad = [
            data.draw(mutated_row(batch_type, _valid(batch_type, next(_serial))))
            for _ in range(n_bad)
        ]
        # Bad rows reuse no valid id, so a full set's last-wins rule cannot hide a valid row.
        items = [*valid, valid[0], *bad]
        order = data.draw(st.permutations(range(len(items))))
        shuffled = [items[i] for i in order]
        body = json.dumps({"items": shuffled}, allow_nan=True).encode()
        answer = post_raw(server.url, customer_token, batch_type, body)
        assert answer.status < 500, (answer.status, answer.body)
        if answer.status != 200:
            assert 400 <= answer.status < 500
            assert isinstance(answer.body, dict) and "error" in answer.body
            return
        result = answer.body
        assert result["accepted"] + result["duplicates"] + result["rejected"] == len(items)
        assert result["rejected"] <= n_bad
        assert result["duplicates"] >= 1, "the repeated valid row"
        assert _stored(central_db, batch_type, valid) == n_valid

    prop()


@st.composite
def _damaged_gzip(draw: st.DrawFn) -> bytes:
    raw = json.dumps({"items": [measurement(1, NOW - timedelta(hours=1))]}).encode()
    packed = bytearray(gzip.compress(raw))
    how = draw(st.sampled_from(["truncate", "flip", "garbage_tail", "prefix"]))
    if how == "truncate":
        return bytes(packed[: draw(st.integers(0, len(packed) - 1))])
    if how == "flip":
        at = draw(st.integers(0, len(packed) - 1))
        packed[at] ^= draw(st.integers(1, 255))
        return bytes(packed)
    if how == "garbage_tail":
        return bytes(packed) + draw(st.binary(min_size=1, max_size=64))
    return draw(st.binary(min_size=1, max_size=64)) + bytes(packed)


def test_damaged_gzip_never_5xx(server: ThreadedIngestd, customer_token: str) -> None:
    """gzip truncated at any point, with any byte flipped, with garbage before or after, is a
    400 (or, when the damage happens to decode, a normal answer) — never a 5xx or a hang."""

    @PROPERTY
    @given(body=_damaged_gzip())
    def prop(body: bytes) -> None:
        answer = post_raw(server.url, customer_token, "measurements", body, gzip_body=False,
                          headers={"Content-Encoding": "gzip"})  # fmt: skip
        assert answer.status < 500, (answer.status, answer.body)
        if answer.status != 200:
            assert answer.body["error"] in {"invalid_gzip", "invalid_json", "invalid_batch"}

    prop()


def test_random_bytes_never_5xx(server: ThreadedIngestd, customer_token: str) -> None:
    """Arbitrary bytes as a body, plain or gzip'd, under any batch type, are refused with a 4xx."""

    @PROPERTY
    @given(
        body=st.binary(max_size=300),
        batch_type=st.sampled_from(["sites", "devices", "measurements"]),
        gz=st.booleans(),
    )
    def prop(body: bytes, batch_type: str, gz: bool) -> None:
        answer = post_raw(server.url, customer_token, batch_type, body, gzip_body=gz)
        assert answer.status < 500, (answer.status, answer.body)

    prop()


def _row(text: str) -> bytes:
    return b'{"items":[' + text.encode("utf-8", "surrogatepass") + b"]}"


ROW = json.dumps(measurement(3, NOW - timedelta(hours=2)))
CASES = {
    "number_overflow_value": _row(ROW.replace('"v1": 230.1', '"v1": 1e999')),
    "number_underflow_value": _row(ROW.replace('"v1": 230.1', '"v1": 1e-400')),
    "id_30_digits": _row(
        ROW.replace('"device_id": 3', '"device_id": 123456789012345678901234567890')
    ),
    "id_float": _row(ROW.replace('"device_id": 3', '"device_id": 3.5')),
    "id_exponent": _row(ROW.replace('"device_id": 3', '"device_id": 3e2')),
    "nan_literal": _row(ROW.replace('"v1": 230.1', '"v1": NaN')),
    "duplicate_json_key": _row(ROW.replace('"v1": 230.1', '"v1": 230.1, "v1": "x"')),
    "nested_value": _row(ROW.replace('"v1": 230.1', '"v1": ' + "[" * 3000 + "]" * 3000)),
    "lone_surrogate_in_key": _row(ROW.replace('"v1"', '"v1\\ud800"')),
    "nul_in_key": _row(ROW.replace('"v1"', '"v1\\u0000"')),
    "raw_control_char": _row(ROW.replace("Z", "Z\x01", 1)),
    "huge_string_5mb": _row(ROW.replace('"v1": 230.1', '"note": "' + "a" * 5_000_000 + '"')),
    "item_not_object": b'{"items":[1, "two", null, true, [], ' + ROW.encode() + b"]}",
    "items_huge_count": b'{"items":[' + b",".join([b"{}"] * 200_000) + b"]}",
    "bom_prefix": b"\xef\xbb\xbf" + _row(ROW),
    "utf16": _row(ROW).decode().encode("utf-16"),
    "trailing_data": _row(ROW) + b"{}",
    "empty_body": b"",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_picked_bodies_never_5xx(
    server: ThreadedIngestd, customer_token: str, central_db: str, name: str
) -> None:
    """Bodies that break the JSON parser's corners (overflowing numbers, duplicate keys, deep
    nesting inside a row, lone surrogates, huge strings and item counts, BOM, UTF-16) are a 400
    or a 200 with that row rejected — and a valid row beside a bad one is stored."""
    answer = post_raw(server.url, customer_token, "measurements", CASES[name])
    assert answer.status < 500, (answer.status, answer.body)
    assert answer.status in (200, 400, 413), answer.status
    if answer.status == 200 and name == "item_not_object":
        assert answer.body["rejected"] == 5
        assert answer.body["accepted"] == 1
        assert _stored(central_db, "measurements", [json.loads(ROW)]) == 1


@pytest.mark.parametrize("batch_type", ["sites", "devices"])
def test_updated_at_offset_beyond_postgres_range(
    server: ThreadedIngestd, customer_token: str, batch_type: str
) -> None:
    """A full-set row stamped with a valid RFC 3339 offset beyond PostgreSQL's text range (+20:26)
    is stored, as the same instant in UTC — not a 5xx."""
    row = _valid(batch_type, next(_serial))
    bad = {**_valid(batch_type, next(_serial)), "updated_at": "2026-02-25T18:31:53+20:26"}
    answer = post_raw(
        server.url, customer_token, batch_type, json.dumps({"items": [row, bad]}).encode()
    )
    assert answer.status == 200, answer.body
    assert (answer.body["accepted"], answer.body["rejected"]) == (2, 0)
    table = "fleet.sites" if batch_type == "sites" else "fleet.devices"
    with psycopg.connect(server.settings.database_url) as conn:
        stored = conn.execute(
            f"SELECT updated_at FROM {table} WHERE id = %s", (bad["id"],)
        ).fetchone()
    assert stored is not None
    assert stored[0] == datetime.fromisoformat("2026-02-25T18:31:53+20:26")
